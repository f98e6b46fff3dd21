// TensorRT 10 plugin "TopKMemory" (namespace "semedge", version "1"): the IPluginV3 form of
// kernels/topk_memory/topk_memory.cu. Inputs q[B,L,d], k[B,n,d], v[B,n,d] (all fp32 or all
// fp16, linear); output out[B,L,d] of the same type; attribute topk (int, 1 <= topk <= n).
//
// Built against TensorRT 10.3.0 and 10.13.3 headers with -Wall -Wextra -Werror and driven by a
// harness the way TensorRT does in the test suite (tests/kernels/test_plugin.py); on a Jetson
// `python -m kernels.build --plugin` builds it (tools/validate_on_device.py does). The
// library exports getCreators and setLoggerFinder only (libsemedge_plugins.map); messages go
// to the logger TensorRT hands to setLoggerFinder.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace semedge {

constexpr char const* kTopKMemoryName = "TopKMemory";
constexpr char const* kTopKMemoryVersion = "1";
constexpr char const* kTopKMemoryNamespace = "semedge";

// Host launcher in topkMemoryLaunch.cu; returns the cudaError_t of the launch as int.
int32_t launchTopKMemory(bool half, void const* q, void const* k, void const* v, void* out,
                         void* workspace, int32_t batch, int32_t L, int32_t n, int32_t d,
                         int32_t topk, cudaStream_t stream);
size_t topKMemoryWorkspaceBytes(int64_t rows, int64_t n, int64_t topk);
int32_t topKMemoryMaxRows();  // largest L the kernels take

class TopKMemoryPlugin : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime {
  public:
    explicit TopKMemoryPlugin(int32_t topk);
    // A copy serialises its own topk (the field collection points into the object).
    TopKMemoryPlugin(TopKMemoryPlugin const& other) : TopKMemoryPlugin(other.mTopK) {}
    TopKMemoryPlugin& operator=(TopKMemoryPlugin const&) = delete;
    ~TopKMemoryPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(
        nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* out,
                            int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                               nvinfer1::DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                            nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs,
                            nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                   int32_t nbInputs, int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* outputs,
                            int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::PluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
                    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs,
                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

  private:
    int32_t mTopK;
    std::vector<nvinfer1::PluginField> mSerialized;
    nvinfer1::PluginFieldCollection mSerializedCollection{};
};

class TopKMemoryPluginCreator : public nvinfer1::IPluginCreatorV3One {
  public:
    TopKMemoryPluginCreator();
    TopKMemoryPluginCreator(TopKMemoryPluginCreator const&) = delete;
    TopKMemoryPluginCreator& operator=(TopKMemoryPluginCreator const&) = delete;
    ~TopKMemoryPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;

  private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

}  // namespace semedge
