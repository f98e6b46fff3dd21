// TopKMemory TensorRT plugin (IPluginV3). See topkMemoryPlugin.h and README.md.
#include "topkMemoryPlugin.h"

#include <cstdio>
#include <cstring>

using namespace nvinfer1;

namespace semedge {
namespace {

constexpr int32_t kInputs = 3;  // q, k, v

void report(char const* message) { std::fprintf(stderr, "[TopKMemory] %s\n", message); }

}  // namespace

TopKMemoryPlugin::TopKMemoryPlugin(int32_t topk) : mTopK(topk) {
    mSerialized.emplace_back("topk", &mTopK, PluginFieldType::kINT32, 1);
    mSerializedCollection.nbFields = static_cast<int32_t>(mSerialized.size());
    mSerializedCollection.fields = mSerialized.data();
}

IPluginCapability* TopKMemoryPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
    switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* TopKMemoryPlugin::clone() noexcept {
    try {
        return new TopKMemoryPlugin(mTopK);
    } catch (...) {
        return nullptr;
    }
}

char const* TopKMemoryPlugin::getPluginName() const noexcept { return kTopKMemoryName; }
char const* TopKMemoryPlugin::getPluginVersion() const noexcept { return kTopKMemoryVersion; }
char const* TopKMemoryPlugin::getPluginNamespace() const noexcept { return kTopKMemoryNamespace; }

int32_t TopKMemoryPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                          DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept {
    if (nbInputs != kInputs || nbOutputs != 1) return 1;
    // Static n (k's second dimension) must hold topk; a dynamic n is checked in enqueue.
    int64_t const n = in[1].desc.dims.d[1];
    if (n >= 0 && mTopK > n) {
        report("topk is larger than the number of memory rows n");
        return 1;
    }
    return 0;
}

int32_t TopKMemoryPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                             DataType const* inputTypes,
                                             int32_t nbInputs) const noexcept {
    if (nbOutputs != 1 || nbInputs != kInputs) return 1;
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t TopKMemoryPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
                                          DimsExprs const*, int32_t, DimsExprs* outputs,
                                          int32_t nbOutputs, IExprBuilder&) noexcept {
    if (nbInputs != kInputs || nbOutputs != 1 || inputs[0].nbDims != 3) return 1;
    outputs[0] = inputs[0];  // out has the shape of q: [B, L, d]
    return 0;
}

bool TopKMemoryPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                                 int32_t, int32_t) noexcept {
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR) return false;
    if (pos == 0) return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    return desc.type == inOut[0].desc.type;  // k, v and out share q's type
}

int32_t TopKMemoryPlugin::getNbOutputs() const noexcept { return 1; }

size_t TopKMemoryPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t,
                                          DynamicPluginTensorDesc const*, int32_t) const noexcept {
    int64_t const rows = inputs[0].max.d[0] * inputs[0].max.d[1];
    return topKMemoryWorkspaceBytes(rows, inputs[1].max.d[1], mTopK);
}

int32_t TopKMemoryPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                        PluginTensorDesc const*, int32_t nbOutputs) noexcept {
    if (nbInputs != kInputs || nbOutputs != 1) return 1;
    if (mTopK < 1 || mTopK > in[1].dims.d[1]) {
        report("topk must be in [1, n] for the current input shape");
        return 1;
    }
    return 0;
}

int32_t TopKMemoryPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
                                  void const* const* inputs, void* const* outputs,
                                  void* workspace, cudaStream_t stream) noexcept {
    Dims const& q = inputDesc[0].dims;
    Dims const& k = inputDesc[1].dims;
    auto const batch = static_cast<int32_t>(q.d[0]);
    auto const L = static_cast<int32_t>(q.d[1]);
    auto const d = static_cast<int32_t>(q.d[2]);
    auto const n = static_cast<int32_t>(k.d[1]);
    if (mTopK < 1 || mTopK > n) return 1;
    bool const half = inputDesc[0].type == DataType::kHALF;
    return launchTopKMemory(half, inputs[0], inputs[1], inputs[2], outputs[0], workspace, batch,
                            L, n, d, mTopK, stream);
}

IPluginV3* TopKMemoryPlugin::attachToContext(IPluginResourceContext*) noexcept { return clone(); }

PluginFieldCollection const* TopKMemoryPlugin::getFieldsToSerialize() noexcept {
    return &mSerializedCollection;
}

TopKMemoryPluginCreator::TopKMemoryPluginCreator() {
    mFields.emplace_back("topk", nullptr, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

char const* TopKMemoryPluginCreator::getPluginName() const noexcept { return kTopKMemoryName; }
char const* TopKMemoryPluginCreator::getPluginVersion() const noexcept { return kTopKMemoryVersion; }
char const* TopKMemoryPluginCreator::getPluginNamespace() const noexcept {
    return kTopKMemoryNamespace;
}

PluginFieldCollection const* TopKMemoryPluginCreator::getFieldNames() noexcept {
    return &mFieldCollection;
}

IPluginV3* TopKMemoryPluginCreator::createPlugin(char const*, PluginFieldCollection const* fc,
                                                 TensorRTPhase) noexcept {
    int64_t topk = -1;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        PluginField const& field = fc->fields[i];
        if (std::strcmp(field.name, "topk") != 0 || field.data == nullptr) continue;
        // The ONNX parser passes INT attributes as kINT32; accept kINT64 from other front ends.
        if (field.type == PluginFieldType::kINT32)
            topk = *static_cast<int32_t const*>(field.data);
        else if (field.type == PluginFieldType::kINT64)
            topk = *static_cast<int64_t const*>(field.data);
    }
    if (topk < 1 || topk > INT32_MAX) {
        report("attribute topk (int >= 1) is missing or invalid");
        return nullptr;
    }
    try {
        return new TopKMemoryPlugin(static_cast<int32_t>(topk));
    } catch (...) {
        return nullptr;
    }
}

}  // namespace semedge

extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder*) {}

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static semedge::TopKMemoryPluginCreator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}
