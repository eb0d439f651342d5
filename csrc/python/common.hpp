// Checks at the Python boundary: every array is validated (type, dtype
// kind, dimensions, shape) before native code reads it.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/typing.h>

#include <cstdint>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace beamner::python {

namespace py = pybind11;

inline std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    s += std::to_string(a.shape(i));
    if (i + 1 < a.ndim() || a.ndim() == 1) s += a.ndim() == 1 ? "," : ", ";
  }
  return s + ")";
}

inline py::array as_array(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj)) {
    std::string type = py::str(py::type::handle_of(obj).attr("__name__"));
    std::string hint = py::hasattr(obj, "__cuda_array_interface__")
                           ? " (copy GPU arrays to the host first, e.g. cupy.asnumpy)"
                           : "";
    throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " + type + hint);
  }
  return py::reinterpret_borrow<py::array>(obj);
}

/// A 1-d integer or boolean array, converted value by value to T; a value
/// that T cannot hold is an error, never silently wrapped.
template <typename T>
std::vector<T> int_vector(const py::handle& obj, const char* name) {
  py::array a = as_array(obj, name);
  const char kind = a.dtype().kind();
  if (kind != 'i' && kind != 'u' && kind != 'b') {
    throw py::type_error(std::string(name) + " must have an integer or bool dtype, got " +
                         std::string(py::str(a.dtype())));
  }
  if (a.ndim() != 1) {
    throw py::value_error(std::string(name) + " must be 1-dimensional, got shape " + shape_of(a));
  }
  std::vector<T> out(static_cast<std::size_t>(a.shape(0)));
  const auto fail = [&](std::size_t i, const std::string& value) {
    throw py::value_error(std::string(name) + "[" + std::to_string(i) + "] = " + value +
                          " does not fit in " + (std::is_signed<T>::value ? "int" : "uint") +
                          std::to_string(8 * sizeof(T)));
  };
  constexpr auto t_max = static_cast<std::uint64_t>(std::numeric_limits<T>::max());
  if (kind == 'i') {
    auto wide = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    const std::int64_t* data = wide.data();
    for (std::size_t i = 0; i < out.size(); ++i) {
      const std::int64_t v = data[i];
      const bool too_small = v < static_cast<std::int64_t>(std::numeric_limits<T>::min());
      const bool too_big = v > 0 && static_cast<std::uint64_t>(v) > t_max;
      if (too_small || too_big) fail(i, std::to_string(v));
      out[i] = static_cast<T>(v);
    }
  } else {
    auto wide = py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    const std::uint64_t* data = wide.data();
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (data[i] > t_max) fail(i, std::to_string(data[i]));
      out[i] = static_cast<T>(data[i]);
    }
  }
  return out;
}

/// A float32, C-contiguous array of the given number of dimensions; no copy.
inline py::array_t<float> float_array(const py::handle& obj, const char* name, int ndim) {
  py::array a = as_array(obj, name);
  if (!a.dtype().is(py::dtype::of<float>())) {
    throw py::type_error(std::string(name) + " must be float32, got " +
                         std::string(py::str(a.dtype())));
  }
  if (a.ndim() != ndim) {
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) +
                          "-dimensional, got shape " + shape_of(a));
  }
  if (!(a.flags() & py::array::c_style)) {
    std::string strides;
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
      strides += (i ? ", " : "") + std::to_string(a.strides(i));
    }
    throw py::value_error(std::string(name) +
                          " must be C-contiguous (use numpy.ascontiguousarray), got strides (" +
                          strides + ") for shape " + shape_of(a));
  }
  return py::reinterpret_borrow<py::array_t<float>>(a);
}

/// A private copy of a checked float32 array, taken while the GIL is held:
/// native code validates its input and then reads it again with the GIL
/// released, when another Python thread could be writing to the caller's
/// buffer.
inline std::vector<float> float_copy(const py::handle& obj, const char* name, int ndim,
                                     std::int64_t* rows, std::int64_t* cols) {
  py::array_t<float> a = float_array(obj, name, ndim);
  *rows = a.shape(0);
  *cols = ndim > 1 ? a.shape(1) : 1;
  return std::vector<float>(a.data(), a.data() + a.size());
}

/// Objects whose native loops release the GIL are locked per call, so a
/// second Python thread gets an error instead of a data race.
class Busy {
 public:
  Busy(std::mutex& mutex, const char* what) : lock_(mutex, std::try_to_lock) {
    if (!lock_.owns_lock()) {
      throw std::runtime_error(std::string("this ") + what +
                               " is in use by another thread; use one per thread");
    }
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

/// A native object as Python holds it, with the lock its bindings take.
template <typename T>
struct Guarded {
  Guarded(T v, const char* what) : value(std::move(v)), name(what) {}
  T value;
  const char* name;  ///< For Busy's message.
  std::mutex mutex;
};

/// The binding of `fn(T&, args...)`: takes the object's lock, then forwards.
/// A function that releases the GIL does so itself, after reading its input.
template <typename T, typename R, typename... Args>
auto locked(R (*fn)(T&, Args...)) {
  return [fn](Guarded<T>& self, Args... args) -> R {
    Busy busy(self.mutex, self.name);
    return fn(self.value, std::forward<Args>(args)...);
  };
}

/// The binding of a const method of T: takes the object's lock, then forwards.
template <typename T, typename R, typename... Args>
auto locked(R (T::*method)(Args...) const) {
  return [method](Guarded<T>& self, Args... args) -> R {
    Busy busy(self.mutex, self.name);
    return (self.value.*method)(std::forward<Args>(args)...);
  };
}

inline bool any_object(PyObject* /*unused*/) { return true; }

/// An argument taken as any Python object (the binding checks it with its
/// own messages: as_array, int_vector, float_array), shown in signatures and
/// the generated stub as Name::text.
template <typename Name>
class Annotated : public py::object {
 public:
  PYBIND11_OBJECT_DEFAULT(Annotated, object, any_object)
};

struct IntArrayName {
  static constexpr char text[] = "numpy.typing.NDArray[numpy.integer]";
};
struct IntArrayOrNoneName {
  static constexpr char text[] = "numpy.typing.NDArray[numpy.integer] | None";
};
struct IntOrBoolArrayName {
  static constexpr char text[] =
      "numpy.typing.NDArray[numpy.integer] | numpy.typing.NDArray[numpy.bool]";
};
struct FloatArrayName {
  static constexpr char text[] = "numpy.typing.NDArray[numpy.float32]";
};
struct FloatArrayOrNoneName {
  static constexpr char text[] = "numpy.typing.NDArray[numpy.float32] | None";
};
using IntArray = Annotated<IntArrayName>;
using IntArrayOrNone = Annotated<IntArrayOrNoneName>;
using IntOrBoolArray = Annotated<IntOrBoolArrayName>;
using FloatArray = Annotated<FloatArrayName>;
using FloatArrayOrNone = Annotated<FloatArrayOrNoneName>;

/// target.advance(scores) for BeamBatch and BeamUpdate: the scores checked
/// and copied while the GIL is held, the step taken with it released.
template <typename T>
void advance_released(T& target, const FloatArray& scores_obj) {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  const std::vector<float> scores = float_copy(scores_obj, "scores", 2, &rows, &cols);
  py::gil_scoped_release release;
  target.advance(scores.data(), rows, cols);
}

/// (start, end, label), as entities cross the boundary.
using EntityTuple = py::typing::Tuple<int, int, int>;

void bind_transition_system(py::module_& m);
void bind_docs(py::module_& m);
void bind_beam_batch(py::module_& m);
void bind_beam_update(py::module_& m);

}  // namespace beamner::python

namespace pybind11::detail {
template <typename Name>
struct handle_type_name<beamner::python::Annotated<Name>> {
  static constexpr auto name = const_name(Name::text);
};
}  // namespace pybind11::detail
