// Drives libsemedge_plugins.so the way TensorRT 10 does, without TensorRT: dlopen, the logger
// finder, getCreators, the creator's fields, createPlugin in the build and runtime phases, the
// build interface (types, formats, output shapes through an expression builder, configure,
// workspace), serialisation and re-creation, clone, attachToContext, onShapeChange and
// enqueue. The library is the emulated build (kernels.build.build_plugin_emulated), so
// enqueue runs the kernels on the CPU on host pointers.
//
// usage: plugin_harness LIBRARY INPUTS OUTPUTS B L n d topk
//   INPUTS: q[B,L,d], k[B,n,d], v[B,n,d] as float32; OUTPUTS receives, for fp32 then fp16,
//   out[B,L,d] as float32 and the kept indices [B,L,topk] as int32.
// Prints one line per check ("ok: ..." / "FAIL: ...") and exits 1 on the first failure.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

#define CHECK(condition, what)                                                      \
    do {                                                                            \
        std::string const check_(what);                                             \
        if (!(condition)) {                                                         \
            std::printf("FAIL: %s (%s, line %d)\n", check_.c_str(), #condition, __LINE__); \
            std::exit(1);                                                           \
        }                                                                           \
        std::printf("ok: %s\n", check_.c_str());                                    \
    } while (0)

namespace {

// --- logger: TensorRT hands the plugin library a finder; we keep what it logs.
struct Logger final : ILogger {
    std::vector<std::string> messages;
    void log(Severity, char const* message) noexcept override { messages.emplace_back(message); }
};
struct Finder final : ILoggerFinder {
    Logger* logger;
    explicit Finder(Logger* l) : logger(l) {}
    ILogger* findLogger() override { return logger; }
};

// --- a simple expression builder: constants and arithmetic on constants.
struct ConstantImpl final : apiv::VDimensionExpr {
    int64_t value;
    explicit ConstantImpl(int64_t v) : value(v) {}
    bool isConstant() const override { return true; }
    int64_t getConstantValue() const override { return value; }
    bool isSizeTensor() const override { return false; }
};
struct Constant final : IDimensionExpr {
    ConstantImpl impl;
    explicit Constant(int64_t v) : impl(v) { mImpl = &impl; }
    ~Constant() noexcept override = default;
};
struct BuilderImpl final : apiv::VExprBuilder {
    std::vector<std::unique_ptr<Constant>> made;
    IDimensionExpr const* constant(int64_t value) override {
        made.push_back(std::make_unique<Constant>(value));
        return made.back().get();
    }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a,
                                    IDimensionExpr const& b) override {
        int64_t const x = a.getConstantValue(), y = b.getConstantValue();
        switch (op) {
            case DimensionOperation::kSUM: return constant(x + y);
            case DimensionOperation::kPROD: return constant(x * y);
            case DimensionOperation::kMAX: return constant(x > y ? x : y);
            case DimensionOperation::kMIN: return constant(x < y ? x : y);
            case DimensionOperation::kSUB: return constant(x - y);
            case DimensionOperation::kEQUAL: return constant(x == y);
            case DimensionOperation::kLESS: return constant(x < y);
            case DimensionOperation::kFLOOR_DIV: return constant(x / y);
            case DimensionOperation::kCEIL_DIV: return constant((x + y - 1) / y);
        }
        return nullptr;
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&,
                                            IDimensionExpr const&) override {
        return nullptr;
    }
};
struct Builder final : IExprBuilder {
    BuilderImpl impl;
    Builder() { mImpl = &impl; }
    ~Builder() noexcept override = default;
};

Dims dims3(int64_t a, int64_t b, int64_t c) {
    Dims d{};
    d.nbDims = 3;
    d.d[0] = a;
    d.d[1] = b;
    d.d[2] = c;
    return d;
}

PluginTensorDesc desc(Dims dims, DataType type, TensorFormat format = TensorFormat::kLINEAR) {
    PluginTensorDesc t{};
    t.dims = dims;
    t.type = type;
    t.format = format;
    t.scale = 1.0f;
    return t;
}

DynamicPluginTensorDesc dynamic(PluginTensorDesc t) {
    DynamicPluginTensorDesc dyn{};
    dyn.desc = t;
    dyn.min = dyn.opt = dyn.max = t.dims;
    return dyn;
}

int32_t serializedTopK(IPluginV3OneRuntime* runtime) {
    PluginFieldCollection const* fc = runtime->getFieldsToSerialize();
    if (fc == nullptr || fc->nbFields != 1 || std::strcmp(fc->fields[0].name, "topk") != 0 ||
        fc->fields[0].type != PluginFieldType::kINT32)
        return -1;
    return *static_cast<int32_t const*>(fc->fields[0].data);
}

template <typename P>
P* as(IPluginV3* plugin, PluginCapabilityType type) {
    return static_cast<P*>(plugin->getCapabilityInterface(type));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 9) {
        std::fprintf(stderr, "usage: %s LIBRARY INPUTS OUTPUTS B L n d topk\n", argv[0]);
        return 2;
    }
    int32_t const B = std::atoi(argv[4]), L = std::atoi(argv[5]), n = std::atoi(argv[6]),
                  d = std::atoi(argv[7]), topk = std::atoi(argv[8]);

    void* library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    CHECK(library != nullptr, "dlopen the plugin library");
    using SetFinder = void (*)(ILoggerFinder*);
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    auto setFinder = reinterpret_cast<SetFinder>(dlsym(library, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(library, "getCreators"));
    CHECK(setFinder != nullptr && getCreators != nullptr, "exports setLoggerFinder, getCreators");
    Logger logger;
    Finder finder(&logger);
    setFinder(&finder);

    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    CHECK(count == 1 && creators != nullptr, "one creator");
    InterfaceInfo const info = creators[0]->getInterfaceInfo();
    CHECK(std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0 && info.major == 1,
          "creator is an IPluginCreatorV3One");
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    CHECK(std::strcmp(creator->getPluginName(), "TopKMemory") == 0 &&
              std::strcmp(creator->getPluginVersion(), "1") == 0 &&
              std::strcmp(creator->getPluginNamespace(), "semedge") == 0,
          "creator name / version / namespace");
    PluginFieldCollection const* names = creator->getFieldNames();
    CHECK(names->nbFields == 1 && std::strcmp(names->fields[0].name, "topk") == 0 &&
              names->fields[0].type == PluginFieldType::kINT32,
          "field names: topk (INT32)");

    PluginFieldCollection empty{};
    CHECK(creator->createPlugin("bad", &empty, TensorRTPhase::kBUILD) == nullptr,
          "missing topk: no plugin");
    CHECK(!logger.messages.empty() && logger.messages.back().find("topk") != std::string::npos,
          "missing topk: reported through TensorRT's logger");
    int64_t const topk64 = topk;
    PluginField field64("topk", &topk64, PluginFieldType::kINT64, 1);
    PluginFieldCollection fc64{1, &field64};
    std::unique_ptr<IPluginV3> from64(creator->createPlugin("n64", &fc64, TensorRTPhase::kBUILD));
    CHECK(from64 != nullptr, "topk as INT64 accepted");

    PluginField field("topk", &topk, PluginFieldType::kINT32, 1);
    PluginFieldCollection fc{1, &field};
    std::unique_ptr<IPluginV3> plugin(creator->createPlugin("node", &fc, TensorRTPhase::kBUILD));
    CHECK(plugin != nullptr, "createPlugin (build phase)");
    auto* core = as<IPluginV3OneCore>(plugin.get(), PluginCapabilityType::kCORE);
    auto* build = as<IPluginV3OneBuild>(plugin.get(), PluginCapabilityType::kBUILD);
    auto* runtime = as<IPluginV3OneRuntime>(plugin.get(), PluginCapabilityType::kRUNTIME);
    CHECK(core && build && runtime, "core, build and runtime capabilities");
    CHECK(std::strcmp(core->getPluginName(), "TopKMemory") == 0, "plugin name");

    // --- build phase
    CHECK(build->getNbOutputs() == 1, "one output");
    DataType outType{};
    DataType const inTypes[] = {DataType::kHALF, DataType::kHALF, DataType::kHALF};
    CHECK(build->getOutputDataTypes(&outType, 1, inTypes, 3) == 0 && outType == DataType::kHALF,
          "output type follows q");
    PluginTensorDesc const q32 = desc(dims3(B, L, d), DataType::kFLOAT);
    DynamicPluginTensorDesc io[4] = {dynamic(q32), dynamic(q32), dynamic(q32), dynamic(q32)};
    CHECK(build->supportsFormatCombination(0, io, 3, 1), "fp32 linear q supported");
    io[0].desc.type = DataType::kINT8;
    CHECK(!build->supportsFormatCombination(0, io, 3, 1), "int8 q refused");
    io[0].desc.type = DataType::kHALF;
    io[1].desc.type = DataType::kFLOAT;
    CHECK(!build->supportsFormatCombination(1, io, 3, 1), "k of another type than q refused");
    io[1].desc.type = DataType::kHALF;
    io[1].desc.format = TensorFormat::kHWC8;
    CHECK(!build->supportsFormatCombination(1, io, 3, 1), "non-linear format refused");

    Builder exprs;
    DimsExprs shapes[3];
    int64_t const sizes[3][3] = {{B, L, d}, {B, n, d}, {B, n, d}};
    for (int i = 0; i < 3; ++i) {
        shapes[i].nbDims = 3;
        for (int j = 0; j < 3; ++j) shapes[i].d[j] = exprs.constant(sizes[i][j]);
    }
    DimsExprs outShape{};
    CHECK(build->getOutputShapes(shapes, 3, nullptr, 0, &outShape, 1, exprs) == 0 &&
              outShape.nbDims == 3 && outShape.d[0]->getConstantValue() == B &&
              outShape.d[1]->getConstantValue() == L && outShape.d[2]->getConstantValue() == d,
          "getOutputShapes: out has q's shape");

    DynamicPluginTensorDesc in[3] = {dynamic(desc(dims3(B, L, d), DataType::kFLOAT)),
                                     dynamic(desc(dims3(B, n, d), DataType::kFLOAT)),
                                     dynamic(desc(dims3(B, n, d), DataType::kFLOAT))};
    DynamicPluginTensorDesc out[1] = {dynamic(desc(dims3(B, L, d), DataType::kFLOAT))};
    CHECK(build->configurePlugin(in, 3, out, 1) == 0, "configurePlugin accepts matching shapes");
    in[1].desc.dims = dims3(B, -1, d);
    CHECK(build->configurePlugin(in, 3, out, 1) == 0, "configurePlugin: dynamic n passes");
    struct Bad {
        Dims q, k, v;
        char const* word;  // expected in the logged message
    };
    Bad const bad[] = {
        {dims3(B, L, d), dims3(B, n, d + 1), dims3(B, n, d), "feature size"},
        {dims3(B, L, d), dims3(B, n, d), dims3(B, n, d + 1), "feature size"},
        {dims3(B, L, d), dims3(B + 1, n, d), dims3(B, n, d), "batch"},
        {dims3(B, L, d), dims3(B, n, d), dims3(B + 1, n, d), "batch"},
        {dims3(B, L, d), dims3(B, n, d), dims3(B, n + 1, d), "memory rows"},
        {dims3(B, L, d), dims3(B, topk - 1, d), dims3(B, topk - 1, d), "topk"},
        {dims3(B, 65, d), dims3(B, n, d), dims3(B, n, d), "query rows"},
    };
    for (Bad const& b : bad) {
        DynamicPluginTensorDesc wrong[3] = {dynamic(desc(b.q, DataType::kFLOAT)),
                                            dynamic(desc(b.k, DataType::kFLOAT)),
                                            dynamic(desc(b.v, DataType::kFLOAT))};
        logger.messages.clear();
        CHECK(build->configurePlugin(wrong, 3, out, 1) != 0 && !logger.messages.empty() &&
                  logger.messages.back().find(b.word) != std::string::npos,
              std::string("configurePlugin refuses and logs: ") + b.word);
    }
    in[1].desc.dims = dims3(B, n, d);
    in[0].max = dims3(B, L, d);
    in[1].max = dims3(B, n, d);
    CHECK(build->getWorkspaceSize(in, 3, out, 1) ==
              static_cast<size_t>(4) * B * L * (n + 2 * topk),
          "workspace 4*B*L*(n + 2*topk) bytes");

    // --- serialisation: fields → createPlugin in the runtime phase
    CHECK(serializedTopK(runtime) == topk, "getFieldsToSerialize holds topk");
    PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    std::unique_ptr<IPluginV3> restored(creator->createPlugin("node", saved, TensorRTPhase::kRUNTIME));
    CHECK(restored != nullptr, "createPlugin (runtime phase) from the serialised fields");
    auto* restoredRuntime = as<IPluginV3OneRuntime>(restored.get(), PluginCapabilityType::kRUNTIME);
    CHECK(serializedTopK(restoredRuntime) == topk, "round trip keeps topk");

    // --- clone / attachToContext: independent of the source
    std::unique_ptr<IPluginV3> copy(plugin->clone());
    std::unique_ptr<IPluginV3> attached(runtime->attachToContext(nullptr));
    CHECK(copy != nullptr && attached != nullptr, "clone and attachToContext");
    plugin.reset();  // the clones must not point into the deleted source
    auto* copyRuntime = as<IPluginV3OneRuntime>(copy.get(), PluginCapabilityType::kRUNTIME);
    CHECK(serializedTopK(copyRuntime) == topk, "a clone serialises its own topk");
    CHECK(serializedTopK(as<IPluginV3OneRuntime>(attached.get(), PluginCapabilityType::kRUNTIME)) ==
              topk,
          "an attached copy serialises its own topk");

    // --- runtime: shapes, then enqueue on the CPU emulation
    std::vector<float> q(size_t(B) * L * d), k(size_t(B) * n * d), v(size_t(B) * n * d);
    std::ifstream inputs(argv[2], std::ios::binary);
    inputs.read(reinterpret_cast<char*>(q.data()), std::streamsize(q.size() * 4));
    inputs.read(reinterpret_cast<char*>(k.data()), std::streamsize(k.size() * 4));
    inputs.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * 4));
    CHECK(inputs.good(), "read the inputs");
    std::ofstream outputs(argv[3], std::ios::binary);
    for (DataType type : {DataType::kFLOAT, DataType::kHALF}) {
        PluginTensorDesc rt[3] = {desc(dims3(B, L, d), type), desc(dims3(B, n, d), type),
                                  desc(dims3(B, n, d), type)};
        PluginTensorDesc rtOut[1] = {desc(dims3(B, L, d), type)};
        rt[2].dims = dims3(B, n, d + 1);
        CHECK(copyRuntime->onShapeChange(rt, 3, rtOut, 1) != 0, "onShapeChange refuses bad v");
        CHECK(copyRuntime->enqueue(rt, rtOut, nullptr, nullptr, nullptr, nullptr) != 0,
              "enqueue refuses bad v before touching memory");
        rt[2].dims = dims3(B, n, d);
        CHECK(copyRuntime->onShapeChange(rt, 3, rtOut, 1) == 0, "onShapeChange accepts");
        std::vector<float> workspace(size_t(B) * L * (n + 2 * topk));
        std::vector<float> result(q.size());
        if (type == DataType::kFLOAT) {
            std::vector<float> o(q.size());
            void const* ins[3] = {q.data(), k.data(), v.data()};
            void* outs[1] = {o.data()};
            CHECK(copyRuntime->enqueue(rt, rtOut, ins, outs, workspace.data(), nullptr) == 0,
                  "enqueue fp32");
            result = o;
        } else {
            auto half = [](std::vector<float> const& x) {
                return std::vector<_Float16>(x.begin(), x.end());
            };
            std::vector<_Float16> hq = half(q), hk = half(k), hv = half(v), o(q.size());
            void const* ins[3] = {hq.data(), hk.data(), hv.data()};
            void* outs[1] = {o.data()};
            CHECK(copyRuntime->enqueue(rt, rtOut, ins, outs, workspace.data(), nullptr) == 0,
                  "enqueue fp16");
            result.assign(o.begin(), o.end());
        }
        outputs.write(reinterpret_cast<char const*>(result.data()), std::streamsize(result.size() * 4));
        outputs.write(reinterpret_cast<char const*>(workspace.data() + size_t(B) * L * n),
                      std::streamsize(size_t(B) * L * topk * 4));  // kept indices (int32)
    }
    CHECK(outputs.good(), "wrote the outputs");
    return 0;
}
