// Eviction policies written in Python: kvscope.register_policy(name, policy) adds a method
// to the C++ registry (kv/eviction.hpp), so the frontier (kind kv_frontier, `methods:`)
// runs it like a built-in one: the same budgets, the same decoding loop, the same bytes.
// The frame asks the policy which slots each KV head of a layer keeps whenever the layer is
// over its budget: at the end of prefill (step 0) and, when the run keeps the budget while
// decoding, after decoded tokens (step k). The Python side (kvscope/__init__.py) turns the
// user's select/update into one callable; this file hands it the layer's cache as numpy
// arrays and checks what comes back.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/kv/eviction.hpp"

namespace kvscope::python {

namespace {

// A Python object whose last reference may be dropped without the GIL (the registry and
// the runs hold it from C++), or after the interpreter has gone (a static registry).
std::shared_ptr<py::object> hold(py::object o) {
  return std::shared_ptr<py::object>(new py::object(std::move(o)), [](py::object* p) {
    if (!Py_IsInitialized()) return;  // at exit: leak rather than touch a dead interpreter
    py::gil_scoped_acquire gil;
    delete p;
  });
}

class PythonPolicy : public EvictionPolicy {
 public:
  PythonPolicy(std::string name, std::shared_ptr<py::object> fn, int window)
      : name_(std::move(name)), fn_(std::move(fn)), window_(window) {}

  PolicyNeeds needs() const override { return {window_, false}; }

  void score(const LayerView&, int, int, std::vector<double>&) const override {
    throw Error(
        fmt::format("eviction method '{}' (Python) chooses slots; it has no scores", name_));
  }

  std::vector<HeadKeep> select(const LayerView& v, const LayerBudget& b) const override {
    const KVCache& kc = *v.cache;
    const ModelConfig& c = *v.config;
    const int nkv = kc.n_kv_heads(), hd = kc.head_dim(), l = v.layer;
    const int used = kc.used(l, 0);
    for (int g = 1; g < nkv; ++g)
      KV_CHECK(kc.used(l, g) == used,
               "eviction method '{}' (Python): layer {} heads hold {} and {} slots; a Python "
               "policy sees a layer's heads as one array and needs them equal",
               name_, l, used, kc.used(l, g));
    for (int g = 0; g < nkv; ++g)
      KV_CHECK(kc.merged_count(l, g) == 0,
               "eviction method '{}' (Python): layer {} head {} holds a merged slot", name_, l, g);
    py::gil_scoped_acquire gil;
    const py::ssize_t H = nkv, U = used, D = hd;
    py::array_t<float> keys({H, U, D}), values({H, U, D});
    py::array_t<int32_t> positions({H, U});
    for (int g = 0; g < nkv; ++g) {
      const size_t n = size_t(used) * size_t(hd);
      std::memcpy(keys.mutable_data(g), kc.k_head(l, g), n * sizeof(float));
      std::memcpy(values.mutable_data(g), kc.v_head(l, g), n * sizeof(float));
      const auto pos = kc.positions(l, g);
      std::memcpy(positions.mutable_data(g), pos.data(), size_t(used) * sizeof(int32_t));
    }
    py::object queries = py::none();
    if (window_ > 0 && v.window_q && v.n_window > 0) {
      py::array_t<float> q({py::ssize_t(c.n_heads), py::ssize_t(v.n_window), D});
      for (int h = 0; h < c.n_heads; ++h)
        std::memcpy(q.mutable_data(h), v.window_q + size_t(h) * v.window_stride * hd,
                    size_t(v.n_window) * hd * sizeof(float));
      queries = std::move(q);
    }
    py::list budget;
    for (int g = 0; g < nkv; ++g) budget.append(b.per_head[size_t(g)]);
    const py::object got = (*fn_)(l, keys, values, queries, budget, positions, v.step);
    return checked(got, l, used, b);
  }

 private:
  // What the policy returned: per KV head, the slots it keeps. Any order; each slot once,
  // in [0, used), at most the head's budget.
  std::vector<HeadKeep> checked(const py::object& got, int l, int used,
                                const LayerBudget& b) const {
    const std::string who = fmt::format("eviction method '{}' (Python), layer {}", name_, l);
    const size_t nkv = b.per_head.size();
    KV_CHECK(py::isinstance<py::sequence>(got) && !py::isinstance<py::str>(got),
             "{}: select returned {}; expected a sequence of {} arrays of kept slots (one per "
             "KV head)",
             who, std::string(py::str(py::type::of(got).attr("__name__"))), nkv);
    const py::sequence seq = got.cast<py::sequence>();
    KV_CHECK(seq.size() == nkv, "{}: select returned {} entries; expected {} (one per KV head)",
             who, seq.size(), nkv);
    std::vector<HeadKeep> out(nkv);
    const py::module_ np = py::module_::import("numpy");
    for (size_t g = 0; g < nkv; ++g) {
      const py::array a = np.attr("asarray")(seq[g]);
      const char kind = a.dtype().kind();
      KV_CHECK(a.ndim() == 1 && (kind == 'i' || kind == 'u' || a.size() == 0),
               "{}: head {}: expected a 1-D array of integer slots, got {}-D of dtype {}", who, g,
               a.ndim(), std::string(py::str(a.dtype())));
      const py::array_t<int64_t> s = np.attr("asarray")(a, "int64");
      std::vector<int> slots(size_t(s.size()));
      for (py::ssize_t i = 0; i < s.size(); ++i) {
        const int64_t x = s.at(i);
        KV_CHECK(x >= 0 && x < used, "{}: head {}: slot {} is outside the head's {} slots", who, g,
                 x, used);
        slots[size_t(i)] = int(x);
      }
      std::sort(slots.begin(), slots.end());
      KV_CHECK(std::adjacent_find(slots.begin(), slots.end()) == slots.end(),
               "{}: head {}: a slot is kept twice", who, g);
      const int B = b.per_head[g];
      KV_CHECK(B == LayerBudget::kUnlimited || int(slots.size()) <= std::max(B, 0),
               "{}: head {}: keeps {} slots, over its budget of {}", who, g, slots.size(), B);
      out[g].slots = std::move(slots);
    }
    return out;
  }

  std::string name_;
  std::shared_ptr<py::object> fn_;
  int window_;
};

}  // namespace

void bind_policy(py::module_& m) {
  m.def(
      "_register_policy",
      [](const std::string& name, const std::string& summary, py::object fn, int window) {
        KV_CHECK(window >= 0, "register_policy('{}'): window must be >= 0, got {}", name, window);
        std::shared_ptr<py::object> held = hold(std::move(fn));
        EvictionMethod e;
        e.name = name;
        e.summary = summary.empty() ? "a policy written in Python" : summary;
        e.make = [name, held, window](YamlMap&, const PolicyContext&) {
          return std::unique_ptr<EvictionPolicy>(new PythonPolicy(name, held, window));
        };
        register_eviction_method(std::move(e));
      },
      py::arg("name"), py::arg("summary"), py::arg("fn"), py::arg("window"));
  m.def("_unregister_policy", &unregister_eviction_method, py::arg("name"));
  m.def("_policy_names", [] {
    std::vector<std::string> names;
    for (const EvictionMethod& e : eviction_methods()) names.push_back(e.name);
    return names;
  });
}

}  // namespace kvscope::python
