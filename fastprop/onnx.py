"""ONNX export of fastprop's MLPs, through skl2onnx.

Optional: ``pip install "fastprop[onnx]"`` adds skl2onnx and onnxruntime; fastprop
imports them only when this module is used.

``to_onnx(estimator, X_sample, **options)`` returns an ``onnx.ModelProto``. Importing
this module registers fastprop's estimators with skl2onnx
(``skl2onnx.update_registered_converter``), so that ``skl2onnx.to_onnx`` also converts
them, alone or inside a pipeline.

The graph computes in the model's dtype: a float32 model gives a float32 graph, a
float64 model a float64 graph, double end to end. skl2onnx's own MLP converters are used
where they are right (float32 binary and multiclass classifiers, float32 single-output
regressors with the identity output); fastprop's converter builds the rest, where
skl2onnx's are not:

- ``loss='poisson'``: skl2onnx has no ``exp`` output activation;
- several regression outputs: skl2onnx declares an ``[N, 1]`` output;
- float64 classifiers: skl2onnx's ZipMap of double probabilities is an invalid graph
  (ZipMap takes float only: fastprop casts the probabilities for it), and onnxruntime
  has no double kernel for the ``Binarizer`` of its multilabel graph (fastprop compares
  with ``Greater``);
- multilabel classifiers, whose labels fastprop computes as ``p > 0.5``, as ``predict``;
- the hidden activations scikit-learn does not have, written with operators of every
  opset skl2onnx targets: ``leaky_relu`` as ``Max(z, 0.01 z)``, ``elu`` as
  ``Relu(z) + Exp(Min(z, 0)) - 1``, ``softplus`` as ``Relu(z) + Log(1 + Exp(-|z|))``
  (the stable form), ``gelu`` as ``0.5 z (1 + Erf(z / sqrt 2))`` (the Gelu operator
  needs opset 20) and ``silu`` as ``z Sigmoid(z)``. onnxruntime runs them all in float
  and all but gelu in double: its CPU provider has no double ``Erf`` (nor ``Elu``), so
  a float64 gelu graph, valid ONNX, needs another runtime (``onnx.reference`` runs it).

Classifier options are skl2onnx's (``zipmap``: True, False or 'columns'; ``nocl``;
``output_class_labels``), but ``zipmap`` defaults to False: the outputs are then the
labels and a probability tensor. (``skl2onnx.to_onnx`` on a bare fastprop classifier
defaults to False too; inside a pipeline, skl2onnx's pipeline parser asks for ZipMap
unless its ``options`` say otherwise, and a float64 model's probabilities are cast to
float for it.)
"""

import numpy as np

try:
    import skl2onnx
    from skl2onnx import update_registered_converter
    from skl2onnx._parse import _apply_zipmap, _parse_sklearn_simple_model
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from skl2onnx.common.utils_classifier import get_label_classes
    from skl2onnx.operator_converters.multilayer_perceptron import (
        convert_sklearn_mlp_classifier,
        convert_sklearn_mlp_regressor,
    )
    from skl2onnx.proto import onnx_proto
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "fastprop.onnx needs skl2onnx and onnxruntime: pip install \"fastprop[onnx]\""
    ) from exc

from ._mlp import MLPClassifier, MLPRegressor

__all__ = ["to_onnx", "register"]

CLASSIFIER_ALIAS = "FastpropMLPClassifier"
REGRESSOR_ALIAS = "FastpropMLPRegressor"
CLASSIFIER_OPTIONS = {
    "zipmap": [False, True, "columns"],
    "nocl": [False, True],
    "output_class_labels": [False, True],
}

_HIDDEN_OPS = {"logistic": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}
# scikit-learn's hidden activations: the others have no place in skl2onnx's graphs
_SKLEARN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
_OUTPUT_OPS = {"logistic": "Sigmoid", "exp": "Exp", "softmax": "Softmax"}


def _dtype(model):
    return np.asarray(model.coefs_[0]).dtype


def _double(model):
    return _dtype(model) == np.float64


def _multilabel(model):
    return model._label_binarizer.y_type_ == "multilabel-indicator"


def _options(scope, model):
    return scope.get_options(model, dict(zipmap=False, nocl=False,
                                         output_class_labels=False))


def _skl2onnx_classifier_is_right(scope, model):
    """skl2onnx's classifier graph is fastprop's where it computes in float and its
    labels are argmax of the probabilities over integer or string classes."""
    classes = np.asarray(model.classes_)
    return (not _double(model) and not _multilabel(model)
            and model.activation in _SKLEARN_ACTIVATIONS
            and not _options(scope, model)["nocl"]
            and (classes.dtype.kind in "iu" or classes.dtype.kind in "UO"))


def _skl2onnx_regressor_is_right(model):
    return (not _double(model) and model.out_activation_ == "identity"
            and model.activation in _SKLEARN_ACTIVATIONS and model.n_outputs_ == 1)


# -- the graph -----------------------------------------------------------------------------

def _node(scope, container, op, inputs, **attrs):
    """One node; returns the name of its output."""
    out = scope.get_unique_variable_name(op.lower())
    container.add_node(op, inputs, [out], name=scope.get_unique_operator_name(op), **attrs)
    return out


def _constant(scope, container, proto, value):
    name = scope.get_unique_variable_name("constant")
    container.add_initializer(name, proto, [], [value])
    return name


def _extra_hidden_activation(scope, container, z, activation, proto):
    """fastprop's own hidden activations, from operators of every opset (see the
    module docstring); returns the output's name."""
    def const(value):
        return _constant(scope, container, proto, value)

    if activation == "leaky_relu":
        # max(z, 0.01 z) is z for z > 0, 0.01 z otherwise
        return _node(scope, container, "Max",
                     [z, _node(scope, container, "Mul", [z, const(0.01)])])
    if activation == "elu":
        # max(z, 0) + e^min(z, 0) - 1: z for z > 0, e^z - 1 otherwise (onnxruntime has
        # no double Elu)
        negative = _node(scope, container, "Sub", [
            _node(scope, container, "Exp", [
                _node(scope, container, "Min", [z, const(0.0)])]), const(1.0)])
        return _node(scope, container, "Add", [_node(scope, container, "Relu", [z]),
                                               negative])
    if activation == "softplus":
        # max(z, 0) + log(1 + e^-|z|)
        tail = _node(scope, container, "Exp", [
            _node(scope, container, "Neg", [_node(scope, container, "Abs", [z])])])
        tail = _node(scope, container, "Log", [
            _node(scope, container, "Add", [tail, const(1.0)])])
        return _node(scope, container, "Add", [_node(scope, container, "Relu", [z]), tail])
    if activation == "gelu":
        # 0.5 z (1 + erf(z / sqrt 2))
        erf = _node(scope, container, "Erf", [
            _node(scope, container, "Mul", [z, const(float(np.sqrt(0.5)))])])
        half_z = _node(scope, container, "Mul", [z, const(0.5)])
        return _node(scope, container, "Mul", [
            half_z, _node(scope, container, "Add", [erf, const(1.0)])])
    if activation == "silu":
        return _node(scope, container, "Mul", [z, _node(scope, container, "Sigmoid", [z])])
    raise ValueError(f"activation={activation!r} cannot be exported to ONNX.")


def _forward(scope, container, model, input_name):
    """The network's output, after the output activation, in the model's dtype."""
    proto = onnx_proto.TensorProto.DOUBLE if _double(model) else onnx_proto.TensorProto.FLOAT
    dtype = _dtype(model)
    current = scope.get_unique_variable_name("input_cast")
    container.add_node("Cast", [input_name], [current], to=proto,
                       name=scope.get_unique_operator_name("Cast"))
    n_layers = len(model.coefs_)
    for i, (W, b) in enumerate(zip(model.coefs_, model.intercepts_)):
        W = np.asarray(W, dtype=dtype)
        b = np.asarray(b, dtype=dtype)
        w_name = scope.get_unique_variable_name("coefficient")
        b_name = scope.get_unique_variable_name("intercepts")
        container.add_initializer(w_name, proto, list(W.shape), W.ravel())
        container.add_initializer(b_name, proto, [1, b.shape[0]], b)
        product = scope.get_unique_variable_name("mul_result")
        container.add_node("MatMul", [current, w_name], [product],
                           name=scope.get_unique_operator_name("MatMul"))
        z = scope.get_unique_variable_name("add_result")
        container.add_node("Add", [product, b_name], [z],
                           name=scope.get_unique_operator_name("Add"))
        last = i == n_layers - 1
        if not last and model.activation not in _SKLEARN_ACTIVATIONS:
            current = _extra_hidden_activation(scope, container, z, model.activation, proto)
            continue
        op = _OUTPUT_OPS.get(model.out_activation_) if last else _HIDDEN_OPS.get(
            model.activation)
        if op is None:  # identity
            current = z
            continue
        current = scope.get_unique_variable_name("activation")
        attrs = {"axis": 1} if op == "Softmax" else {}
        container.add_node(op, [z], [current], name=scope.get_unique_operator_name(op),
                           **attrs)
    return current, proto


def convert_classifier(scope, operator, container):
    """skl2onnx converter of ``fastprop.MLPClassifier``."""
    model = operator.raw_operator
    if _skl2onnx_classifier_is_right(scope, model):
        return convert_sklearn_mlp_classifier(scope, operator, container)
    P, proto = _forward(scope, container, model, operator.inputs[0].full_name)
    label_out = operator.outputs[0].full_name
    proba_out = operator.outputs[1].full_name
    if _multilabel(model):
        container.add_node("Identity", [P], [proba_out],
                           name=scope.get_unique_operator_name("Identity"))
        half = scope.get_unique_variable_name("half")
        container.add_initializer(half, proto, [], [0.5])
        above = scope.get_unique_variable_name("above_half")
        container.add_node("Greater", [P, half], [above],
                           name=scope.get_unique_operator_name("Greater"))
        container.add_node("Cast", [above], [label_out], to=onnx_proto.TensorProto.INT64,
                           name=scope.get_unique_operator_name("Cast"))
        return
    if model.n_outputs_ == 1:
        # predict_proba's two columns: 1 - p, p
        one = scope.get_unique_variable_name("one")
        container.add_initializer(one, proto, [], [1.0])
        negative = scope.get_unique_variable_name("negative_class_proba")
        container.add_node("Sub", [one, P], [negative],
                           name=scope.get_unique_operator_name("Sub"))
        container.add_node("Concat", [negative, P], [proba_out], axis=1,
                           name=scope.get_unique_operator_name("Concat"))
    else:
        container.add_node("Identity", [P], [proba_out],
                           name=scope.get_unique_operator_name("Identity"))
    index = scope.get_unique_variable_name("argmax")
    container.add_node("ArgMax", [proba_out], [index], axis=1, keepdims=0,
                       name=scope.get_unique_operator_name("ArgMax"))
    classes, kind = _label_classes(scope, model)
    classes_name = scope.get_unique_variable_name("classes")
    container.add_initializer(classes_name, kind, [len(classes)], classes)
    container.add_node("Gather", [classes_name, index], [label_out], axis=0,
                       name=scope.get_unique_operator_name("Gather"))


def _label_classes(scope, model):
    """The class labels the graph outputs, and their ONNX type: int64 for integer and
    bool classes (and for indices, with ``nocl``), strings for strings, the classes'
    own float type for float classes."""
    classes = np.asarray(get_label_classes(scope, model))
    if classes.dtype.kind in "iub":
        return classes.astype(np.int64), onnx_proto.TensorProto.INT64
    if classes.dtype.kind == "f":
        if classes.dtype == np.float32:
            return classes, onnx_proto.TensorProto.FLOAT
        return classes.astype(np.float64), onnx_proto.TensorProto.DOUBLE
    return (np.array([str(c).encode("utf-8") for c in classes]),
            onnx_proto.TensorProto.STRING)


def convert_regressor(scope, operator, container):
    """skl2onnx converter of ``fastprop.MLPRegressor``."""
    model = operator.raw_operator
    if _skl2onnx_regressor_is_right(model):
        return convert_sklearn_mlp_regressor(scope, operator, container)
    P, _ = _forward(scope, container, model, operator.inputs[0].full_name)
    container.add_node("Identity", [P], [operator.outputs[0].full_name],
                       name=scope.get_unique_operator_name("Identity"))


# -- shapes and parsing ------------------------------------------------------------------

def _tensor_type(model):
    return DoubleTensorType if _double(model) else FloatTensorType


def classifier_shapes(operator):
    model = operator.raw_operator
    if _skl2onnx_classifier_is_right(operator.scope_inst, model):
        return calculate_linear_classifier_output_shapes(operator)
    N = operator.inputs[0].get_first_dimension()
    n_classes = len(model.classes_)
    if _multilabel(model):
        operator.outputs[0].type = Int64TensorType([N, n_classes])
    else:
        _, kind = _label_classes(operator.scope_inst, model)
        label_type = {onnx_proto.TensorProto.INT64: Int64TensorType,
                      onnx_proto.TensorProto.FLOAT: FloatTensorType,
                      onnx_proto.TensorProto.DOUBLE: DoubleTensorType,
                      onnx_proto.TensorProto.STRING: StringTensorType}[kind]
        operator.outputs[0].type = label_type([N])
    operator.outputs[1].type = _tensor_type(model)([N, n_classes])


def regressor_shapes(operator):
    model = operator.raw_operator
    if _skl2onnx_regressor_is_right(model):
        return calculate_linear_regressor_output_shapes(operator)
    N = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = _tensor_type(model)([N, model.n_outputs_])


def _cast_to_float_shapes(operator):
    operator.outputs[0].type = FloatTensorType(operator.inputs[0].type.shape)


def _cast_to_float(scope, operator, container):
    container.add_node("Cast", [operator.inputs[0].full_name],
                       [operator.outputs[0].full_name], to=onnx_proto.TensorProto.FLOAT,
                       name=scope.get_unique_operator_name("Cast"))


def parse_classifier(scope, model, inputs, custom_parsers=None):
    """skl2onnx's classifier parsing with ``zipmap`` off unless asked for, and a cast to
    float in front of ZipMap for a float64 model (ZipMap takes float only)."""
    options = _options(scope, model)
    outputs = _parse_sklearn_simple_model(scope, model, inputs,
                                          custom_parsers=custom_parsers)
    zipmap = options["zipmap"]
    if zipmap is False:
        if options["output_class_labels"]:
            labels = scope.declare_local_operator("SklearnClassLabels")
            labels.classes = get_label_classes(scope, model)
            kind = (Int64TensorType if np.asarray(labels.classes).dtype.kind in "iub"
                    else StringTensorType)
            variable = scope.declare_local_variable(
                "class_labels", kind(np.asarray(labels.classes).shape))
            labels.outputs.append(variable)
            return list(outputs) + [variable]
        return outputs
    if options["output_class_labels"]:
        raise RuntimeError("Option 'output_class_labels' is not compatible with option "
                           "'zipmap'.")
    probabilities = outputs[1]
    if _double(model):
        cast = scope.declare_local_operator("FastpropCastToFloat")
        cast.inputs = [probabilities]
        probabilities = scope.declare_local_variable("probabilities_float",
                                                     FloatTensorType())
        cast.outputs.append(probabilities)
    return _apply_zipmap(zipmap, scope, model, FloatTensorType(),
                         [outputs[0], probabilities])


_registered = False


def register():
    """Register fastprop's estimators with skl2onnx (done when this module is
    imported; calling it again does nothing)."""
    global _registered
    if _registered:
        return
    from skl2onnx.common._registration import register_converter, register_shape_calculator

    register_converter("FastpropCastToFloat", _cast_to_float, overwrite=True)
    register_shape_calculator("FastpropCastToFloat", _cast_to_float_shapes, overwrite=True)
    update_registered_converter(
        MLPClassifier, CLASSIFIER_ALIAS, classifier_shapes, convert_classifier,
        parser=parse_classifier, options=CLASSIFIER_OPTIONS,
    )
    update_registered_converter(MLPRegressor, REGRESSOR_ALIAS, regressor_shapes,
                                convert_regressor)
    _registered = True


def to_onnx(estimator, X_sample, **options):
    """Export a fitted fastprop estimator (or a pipeline holding fastprop estimators)
    as an ONNX graph.

    Parameters
    ----------
    estimator : fitted MLPClassifier, MLPRegressor, or a scikit-learn pipeline
    X_sample : array-like of shape (n_samples, n_features)
        A few rows of input, to fix the input's name and width. Its dtype is the
        model's: a float32 model gives a float32 graph, a float64 model a float64 one.
    **options
        Converter options for fastprop's classifiers, as skl2onnx names them:
        ``zipmap`` (default False), ``nocl``, ``output_class_labels``. Anything else
        goes to ``skl2onnx.to_onnx`` (``target_opset``, ``name``, ...).

    Returns
    -------
    onnx.ModelProto
    """
    register()
    converter_options = {k: options.pop(k) for k in list(options)
                         if k in CLASSIFIER_OPTIONS}
    dtype = _estimator_dtype(estimator)
    X_sample = np.asarray(X_sample)
    if dtype is not None and X_sample.dtype != dtype:
        X_sample = X_sample.astype(dtype)
    # by class, so that it reaches classifiers inside pipelines too, whose parser would
    # otherwise ask for ZipMap
    per_model = dict(options.pop("options", None) or {})
    per_model[MLPClassifier] = {"zipmap": False, **per_model.get(MLPClassifier, {}),
                                **converter_options}
    options["options"] = per_model
    return skl2onnx.to_onnx(estimator, X_sample, **options)


def _estimator_dtype(estimator):
    """The dtype of the first fastprop model in ``estimator`` (a model or a pipeline)."""
    if isinstance(estimator, (MLPClassifier, MLPRegressor)):
        return _dtype(estimator)
    steps = getattr(estimator, "steps", None)
    if steps and isinstance(steps[0][1], (MLPClassifier, MLPRegressor)):
        return _dtype(steps[0][1])
    return None


register()
