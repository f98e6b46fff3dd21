// TopKMemory TensorRT plugin (IPluginV3). See topkMemoryPlugin.h and README.md.
#include "topkMemoryPlugin.h"

#include <atomic>
#include <cstring>
#include <string>

using namespace nvinfer1;

namespace semedge {
namespace {

constexpr int32_t kInputs = 3;  // q, k, v

std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};

// An error through TensorRT's logger (silent until TensorRT called setLoggerFinder).
void report(std::string const& message) noexcept {
    try {
        ILoggerFinder* finder = gLoggerFinder.load();
        ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
            logger->log(ILogger::Severity::kERROR, ("[TopKMemory] " + message).c_str());
    } catch (...) {
    }
}

// q[B,L,d], k[B,n,d], v[B,n,d] agree (dimensions < 0 are not known yet and pass) and the
// kernels take them: 1 <= topk <= n, L <= the kernels' limit. Reports and returns false if not.
bool shapesFit(Dims const& q, Dims const& k, Dims const& v, int32_t topk) noexcept {
    if (q.nbDims != 3 || k.nbDims != 3 || v.nbDims != 3) {
        report("q, k and v must be 3-D: q[B,L,d], k[B,n,d], v[B,n,d]");
        return false;
    }
    auto const agree = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
    if (!agree(k.d[0], q.d[0]) || !agree(v.d[0], q.d[0])) {
        report("k and v must have q's batch size B");
        return false;
    }
    if (!agree(k.d[2], q.d[2]) || !agree(v.d[2], q.d[2])) {
        report("k and v must have q's feature size d");
        return false;
    }
    if (!agree(v.d[1], k.d[1])) {
        report("v must have as many memory rows n as k");
        return false;
    }
    if (q.d[1] > topKMemoryMaxRows()) {
        report("q has more query rows L than the kernels take (" +
               std::to_string(topKMemoryMaxRows()) + "); split the queries");
        return false;
    }
    if (topk < 1 || (k.d[1] >= 0 && topk > k.d[1])) {
        report("topk must be in [1, n], n = k's second dimension");
        return false;
    }
    return true;
}

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
        return new TopKMemoryPlugin(*this);
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
    // Dimensions known at build time are checked here; dynamic ones in onShapeChange.
    return shapesFit(in[0].desc.dims, in[1].desc.dims, in[2].desc.dims, mTopK) ? 0 : 1;
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
    return shapesFit(in[0].dims, in[1].dims, in[2].dims, mTopK) ? 0 : 1;
}

int32_t TopKMemoryPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
                                  void const* const* inputs, void* const* outputs,
                                  void* workspace, cudaStream_t stream) noexcept {
    Dims const& q = inputDesc[0].dims;
    Dims const& k = inputDesc[1].dims;
    if (!shapesFit(q, k, inputDesc[2].dims, mTopK)) return 1;
    auto const batch = static_cast<int32_t>(q.d[0]);
    auto const L = static_cast<int32_t>(q.d[1]);
    auto const d = static_cast<int32_t>(q.d[2]);
    auto const n = static_cast<int32_t>(k.d[1]);
    bool const half = inputDesc[0].type == DataType::kHALF;
    return launchTopKMemory(half, inputs[0], inputs[1], inputs[2], outputs[0], workspace, batch,
                            L, n, d, mTopK, stream);
}

IPluginV3* TopKMemoryPlugin::attachToContext(IPluginResourceContext*) noexcept { return clone(); }

PluginFieldCollection const* TopKMemoryPlugin::getFieldsToSerialize() noexcept {
    mSerialized.front().data = &mTopK;  // this object's field, whoever it was copied from
    mSerializedCollection.fields = mSerialized.data();
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

// The library's only exports (built with hidden visibility + libsemedge_plugins.map).
#define SEMEDGE_EXPORT extern "C" __attribute__((visibility("default")))

SEMEDGE_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    semedge::gLoggerFinder.store(finder);
}

SEMEDGE_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static semedge::TopKMemoryPluginCreator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}
