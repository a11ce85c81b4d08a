"""The usual porting mistakes, each as the patches that would undo it in a culprit.

Every kind is one function from a :class:`Culprit` to the patches that apply to it (none when
the mistake cannot be there: no activation, no eps attribute, no q/k pair), in the order worth
trying: the original's own value first when it is known. :data:`KINDS` lists them in priority
order, which is also how two fixes that both make a module match exactly are ranked: the more
specific explanation first (a swapped pair of projections before "replace the weight by the
original's", which any wrong weight satisfies).

To add a mistake: write a function ``(culprit) -> Iterator[Patch]`` from the reversible changes in
:mod:`tracetui.fixes.patches`, and add it to :data:`KINDS`.
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import combinations, permutations

import torch
import torch.nn.functional as F

from tracetui.fixes.patches import (
    Patch,
    Undo,
    add_input_of,
    all_of,
    exchange_values,
    override_forward,
    replace_values,
    set_attribute,
    training_mode,
    transform_input,
    transform_output,
)
from tracetui.weights.report import Piece, TensorSource


@dataclass(frozen=True)
class Counterpart:
    """The original's module paired with a ported one: its name and class, and the module itself
    when the original model is at hand (ORIG given as a script)."""

    name: str
    class_name: str
    module: torch.nn.Module | None = None


@dataclass(frozen=True)
class Culprit:
    """A culprit module of the port, what surrounds it, and its originals' counterparts."""

    name: str  # the ported qualified name ("" for the root)
    module: torch.nn.Module
    model: torch.nn.Module  # the whole port: siblings of the culprit are looked up there
    counterparts: dict[str, Counterpart] = field(default_factory=dict)  # by ported module name
    # The original's state dict, and where the weights check (tracetui.weights) found each of the
    # culprit's tensors in it, by full ported tensor name: empty when the original model is not at hand.
    original_tensors: Mapping[str, torch.Tensor] = field(default_factory=dict)
    weight_sources: Mapping[str, TensorSource] = field(default_factory=dict)

    def full_name(self, relative: str) -> str:
        return ".".join(part for part in (self.name, relative) if part) or "(root)"

    def submodules(self) -> Iterator[tuple[str, torch.nn.Module]]:
        """The culprit and every module inside it, with their full ported names."""
        for relative, module in self.module.named_modules():
            yield self.full_name(relative), module

    def counterpart(self, full_name: str) -> Counterpart | None:
        return self.counterparts.get("" if full_name == "(root)" else full_name)

    def tensor_name(self, module_name: str, leaf: str) -> str:
        """A tensor's state-dict name from its module's full name (as :meth:`submodules` gives it)."""
        return leaf if module_name == "(root)" else f"{module_name}.{leaf}"


# -- activation ------------------------------------------------------------------------------------


def quick_gelu(values: torch.Tensor) -> torch.Tensor:
    return values * torch.sigmoid(1.702 * values)


# name → (how the user reads it, the function)
ACTIVATIONS: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "gelu": ("GELU", F.gelu),
    "gelu_tanh": ("GELU (tanh approximation)", partial(F.gelu, approximate="tanh")),
    "silu": ("SiLU", F.silu),
    "relu": ("ReLU", F.relu),
    "quick_gelu": ("QuickGELU", quick_gelu),
    "sigmoid": ("Sigmoid", torch.sigmoid),
    "tanh": ("Tanh", torch.tanh),
    "identity": ("nothing (identity)", lambda values: values),
}
# Class names (lower case, letters only) of the activations in torch and transformers, by what they compute.
GELU_TANH_CLASSES = ("newgelu", "gelutanh", "fastgelu", "pytorchgelutanh", "gelupytorchtanh", "accurategelu")


def activation_name(class_name: str, module: torch.nn.Module | None = None) -> str | None:
    """What an activation module computes, by its class (and, for nn.GELU, its ``approximate``)."""
    if isinstance(module, torch.nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    letters = "".join(character for character in class_name.lower() if character.isalpha()).removesuffix("activation")
    if "quickgelu" in letters:
        return "quick_gelu"
    if any(name in letters for name in GELU_TANH_CLASSES):
        return "gelu_tanh"
    if "gelu" in letters:
        return "gelu"
    if "silu" in letters or letters == "swish":
        return "silu"
    return {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}.get(letters)


def is_activation(module: torch.nn.Module) -> bool:
    """A module that only applies an activation: no parameters, no submodules, a known class."""
    return (
        not any(True for _ in module.children())
        and not any(True for _ in module.parameters())
        and (activation_name(type(module).__name__, module) is not None)
    )


def original_activations(counterpart: Counterpart | None) -> list[str]:
    """The activations the original's counterpart may compute, most likely first: both GELUs for a
    class name "GELU" when the module itself is not at hand to read its ``approximate``."""
    if counterpart is None:
        return []
    if counterpart.module is not None:
        found = [activation_name(type(module).__name__, module) for module in counterpart.module.modules()]
        return [name for name in found if name is not None]
    name = activation_name(counterpart.class_name)
    if name == "gelu":
        return ["gelu", "gelu_tanh"]
    return [] if name is None else [name]


def in_trying_order(first: list[str], current: str | None) -> list[str]:
    ordered = list(dict.fromkeys([*first, *ACTIVATIONS]))
    return [name for name in ordered if name != current]


def replaced_forward(function: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    def forward(values: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return function(values)

    return forward


def applied_to_output(
    function: Callable[[torch.Tensor], torch.Tensor], output: torch.Tensor, first_input: torch.Tensor | None
) -> torch.Tensor:
    return function(output)


def activation_patches(culprit: Culprit) -> Iterator[Patch]:
    """Each activation module in the culprit replaced by each other activation; a culprit with
    none (and a tensor output) gets each activation applied to its output: a missing one."""
    activations = [(name, module) for name, module in culprit.submodules() if is_activation(module)]
    for name, module in activations:
        current = activation_name(type(module).__name__, module)
        for candidate in in_trying_order(original_activations(culprit.counterpart(name)), current):
            shown, function = ACTIVATIONS[candidate]
            yield Patch(
                "activation",
                candidate,
                f"replacing {type(module).__name__} by {shown} in {name}",
                partial(override_forward, module, replaced_forward(function)),
            )
    if activations:
        return
    for candidate in in_trying_order(original_activations(culprit.counterpart(culprit.full_name(""))), "identity"):
        shown, function = ACTIVATIONS[candidate]
        yield Patch(
            "activation",
            candidate,
            f"applying {shown} to the output of {culprit.full_name('')}",
            partial(transform_output, culprit.module, partial(applied_to_output, function)),
        )


# -- eps -------------------------------------------------------------------------------------------

EPS_ATTRIBUTES = ("eps", "variance_epsilon", "epsilon")
EPS_VALUES = (1e-5, 1e-6, 1e-12, 1e-8, 1e-3)


def float_attributes(module: torch.nn.Module | None, names: tuple[str, ...]) -> list[tuple[str, float]]:
    if module is None:
        return []
    found = [(name, getattr(module, name, None)) for name in names]
    return [(name, float(value)) for name, value in found if isinstance(value, (float, int)) and not isinstance(value, bool)]


def eps_patches(culprit: Culprit) -> Iterator[Patch]:
    """A norm's eps set to the original's own value first, then to the usual ones."""
    for name, module in culprit.submodules():
        counterpart = culprit.counterpart(name)
        originals = [value for _, value in float_attributes(counterpart.module if counterpart else None, EPS_ATTRIBUTES)]
        for attribute, current in float_attributes(module, EPS_ATTRIBUTES):
            for value in dict.fromkeys([*originals, *EPS_VALUES]):
                if value != current:
                    yield Patch(
                        "eps",
                        f"{value:g}",
                        f"setting {name}.{attribute} to {value:g} (was {current:g})",
                        partial(set_attribute, module, attribute, value),
                    )


# -- attention scale -------------------------------------------------------------------------------

SCALE_ATTRIBUTES = ("scale", "scaling", "softmax_scale", "attention_scale", "attn_scale", "scale_factor")


def model_setting(module: torch.nn.Module, names: tuple[str, ...]) -> int | None:
    """A positive integer setting of the module, or of its ``config``."""
    for owner in (module, getattr(module, "config", None)):
        for name in names:
            value = getattr(owner, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def hidden_size(module: torch.nn.Module) -> int | None:
    return model_setting(module, ("hidden_size", "embed_dim", "n_embd", "dim", "d_model"))


def head_dimension(module: torch.nn.Module) -> int | None:
    found = model_setting(module, ("head_dim", "attention_head_size", "head_size"))
    heads = model_setting(module, ("num_heads", "num_attention_heads", "n_head", "n_heads"))
    hidden = hidden_size(module)
    if found is None and heads is not None and hidden is not None and hidden % heads == 0:
        return hidden // heads
    return found


def scale_candidates(module: torch.nn.Module, current: float, originals: list[float]) -> list[tuple[float, str]]:
    candidates = [(value, "the original's") for value in originals]
    head_dim, hidden = head_dimension(module), hidden_size(module)
    if head_dim is not None:
        candidates += [(head_dim**-0.5, "1/√head_dim"), (1.0 / head_dim, "1/head_dim")]
    if hidden is not None:
        candidates.append((hidden**-0.5, "1/√hidden"))
    candidates.append((1.0, "no scaling"))
    if current > 0:
        candidates += [(math.sqrt(current), "√ of the current value"), (current * current, "the current value squared")]
    kept: list[tuple[float, str]] = []
    for value, label in candidates:
        if not math.isclose(value, current, rel_tol=1e-9) and not any(math.isclose(value, other, rel_tol=1e-9) for other, _ in kept):
            kept.append((value, label))
    return kept


def scale_patches(culprit: Culprit) -> Iterator[Patch]:
    """An attention module's scaling attribute set to the original's, 1/√head_dim, 1/head_dim, 1/√hidden and 1."""
    for name, module in culprit.submodules():
        counterpart = culprit.counterpart(name)
        originals = [value for _, value in float_attributes(counterpart.module if counterpart else None, SCALE_ATTRIBUTES)]
        for attribute, current in float_attributes(module, SCALE_ATTRIBUTES):
            for value, label in scale_candidates(module, current, originals):
                yield Patch(
                    "scale",
                    f"{value:.6g}",
                    f"setting {name}.{attribute} to {value:.6g} ({label}; was {current:.6g})",
                    partial(set_attribute, module, attribute, value),
                )


# -- head count ------------------------------------------------------------------------------------

HEAD_COUNT_ATTRIBUTES = (
    ("num_heads", "num_attention_heads", "n_head", "n_heads"),
    ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_kv_head"),
)


def own_setting(module: torch.nn.Module, names: tuple[str, ...]) -> tuple[str, int] | None:
    """The first of ``names`` the module itself holds as a positive integer (not its config's:
    the forward reads its own attribute), with its value."""
    for name in names:
        value = module.__dict__.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return name, value
    return None


def head_count_changes(module: torch.nn.Module, attribute: str, current: int, value: int) -> Iterator[Callable[[], Undo]]:
    """The head count set, and what the module derived from it at construction: ``head_dim``
    (when it was hidden // heads) and a scaling of 1/√head_dim."""
    yield partial(set_attribute, module, attribute, value)
    hidden = hidden_size(module)
    head_dim = module.__dict__.get("head_dim")
    if hidden is None or hidden % value or not isinstance(head_dim, int) or head_dim * current != hidden:
        return
    yield partial(set_attribute, module, "head_dim", hidden // value)
    for name, scale in float_attributes(module, SCALE_ATTRIBUTES):
        if math.isclose(scale, head_dim**-0.5, rel_tol=1e-9):
            yield partial(set_attribute, module, name, (hidden // value) ** -0.5)


def head_count_patches(culprit: Culprit) -> Iterator[Patch]:
    """An attention's head count (``num_heads``, ``num_key_value_heads``, ...) set to its original
    counterpart's, where the two differ: the same weights split into other heads. Needs the
    original model (its counterpart's attribute)."""
    for name, module in culprit.submodules():
        counterpart = culprit.counterpart(name)
        if counterpart is None or counterpart.module is None:
            continue
        for names in HEAD_COUNT_ATTRIBUTES:
            found, original = own_setting(module, names), own_setting(counterpart.module, names)
            if found is None or original is None or found[1] == original[1]:
                continue
            attribute, current = found
            yield Patch(
                "heads",
                f"{name}.{attribute} = {original[1]}",
                f"setting {name}.{attribute} to {original[1]}, the original's {counterpart.name}.{original[0]} (was {current})",
                all_of(*head_count_changes(module, attribute, current, original[1])),
            )


# -- rotary layout of the q/k rows -----------------------------------------------------------------

QK_NAMES = (("q_proj", "k_proj"), ("wq", "wk"), ("query", "key"), ("q", "k"), ("q_lin", "k_lin"))


def interleaved_to_halves(rows: torch.Tensor, heads: int) -> torch.Tensor:
    """The llama conversion's ``permute``: each head's (even, odd) row pairs → its two halves."""
    return rows.reshape(heads, rows.shape[0] // heads // 2, 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


def halves_to_interleaved(rows: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of :func:`interleaved_to_halves` (llama2.c's export)."""
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


def replace_by(tensor: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]) -> Undo:
    """The tensor's values through ``transform``, computed only when the patch is applied."""
    return replace_values(tensor, transform(tensor.data))


def projection_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [tensor for tensor in (getattr(module, "weight", None), getattr(module, "bias", None)) if isinstance(tensor, torch.Tensor)]


def repermuted(rows: torch.Tensor, wrong_heads: int, heads: int) -> torch.Tensor:
    """Rows permuted with ``wrong_heads`` heads, permuted again with the right number."""
    return interleaved_to_halves(halves_to_interleaved(rows, wrong_heads), heads)


def grouped_key_patches(name: str, key_name: str, key: torch.nn.Module | None, weights: list[object], head_dim: int) -> Iterator[Patch]:
    """With grouped-query attention, k's rows permuted with the query head count (a classic
    conversion slip): undo that permutation and permute them with k's own."""
    query_weight, key_weight = weights
    if key is None or not isinstance(query_weight, torch.Tensor) or not isinstance(key_weight, torch.Tensor):
        return
    query_heads, key_heads = query_weight.shape[0] // head_dim, key_weight.shape[0] // head_dim
    if query_heads == key_heads:
        return
    changes = [
        partial(replace_by, tensor, partial(repermuted, wrong_heads=query_heads, heads=key_heads)) for tensor in projection_tensors(key)
    ]
    yield Patch(
        "rope_permutation",
        f"{key_name} permuted with {query_heads} heads, not {key_heads}",
        f"permuting the rows of {name}.{key_name} with its own {key_heads} heads instead of the query's {query_heads}",
        all_of(*changes),
    )


def rope_permutation_patches(culprit: Culprit) -> Iterator[Patch]:
    """The rows of both q and k projections permuted between the interleaved rotary layout and
    the half-split one, each way."""
    directions = (("interleaved → half-split", interleaved_to_halves), ("half-split → interleaved", halves_to_interleaved))
    for name, module in culprit.submodules():
        head_dim = head_dimension(module)
        if head_dim is None or head_dim % 2:
            continue
        for query_name, key_name in QK_NAMES:
            projections = [module._modules.get(child) for child in (query_name, key_name)]
            weights = [getattr(projection, "weight", None) for projection in projections]
            fits = [isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[0] % head_dim == 0 for weight in weights]
            if None in projections or not all(fits):
                continue
            for label, permutation in directions:
                changes = [
                    partial(replace_by, tensor, partial(permutation, heads=tensor.shape[0] // head_dim))
                    for projection in projections
                    if projection is not None
                    for tensor in projection_tensors(projection)
                ]
                layouts = label.replace(" → ", " to the ")
                description = f"permuting the rows of {name}.{query_name} and {name}.{key_name} from the {layouts} rotary layout"
                yield Patch("rope_permutation", label, description, all_of(*changes))
            yield from grouped_key_patches(name, key_name, projections[1], weights, head_dim)
            break


# -- layout ----------------------------------------------------------------------------------------


# The permutation to channels-last and back, by number of dimensions (batch, channels, 1 to 3 spatial).
TO_CHANNELS_LAST = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}
TO_CHANNELS_FIRST = {3: (0, 2, 1), 4: (0, 3, 1, 2), 5: (0, 4, 1, 2, 3)}
CHANNEL_MODULES = (torch.nn.modules.conv._ConvNd, torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)


def permuted(order: dict[int, tuple[int, ...]], values: torch.Tensor) -> torch.Tensor | None:
    permutation = order.get(values.dim())
    return None if permutation is None else values.permute(permutation).contiguous()


def permuted_output(order: dict[int, tuple[int, ...]], output: torch.Tensor, first_input: torch.Tensor | None) -> torch.Tensor | None:
    return permuted(order, output)


def has_channels(culprit: Culprit) -> bool:
    """A norm, or a module with a convolution in it: the modules whose meaning depends on which
    dimension holds the channels (a transformer block holds norms too, but is no norm)."""
    own_class = type(culprit.module).__name__.lower()
    return (
        isinstance(culprit.module, CHANNEL_MODULES)
        or "norm" in own_class
        or any(
            isinstance(module, torch.nn.modules.conv._ConvNd) or "conv" in type(module).__name__.lower()
            for _, module in culprit.submodules()
        )
    )


def channel_layout_patches(culprit: Culprit) -> Iterator[Patch]:
    """A conv/norm culprit run on (or returning) channels-last where the original is channels-first,
    or the reverse: its output permuted; its input permuted and its output permuted back (a
    module written for one layout given the other); its input permuted alone."""
    if not has_channels(culprit):
        return
    name, module = culprit.full_name(""), culprit.module
    layouts = (("channels-first", "channels-last", TO_CHANNELS_LAST), ("channels-last", "channels-first", TO_CHANNELS_FIRST))
    for source, target, order in layouts:
        yield Patch(
            "layout",
            f"output {source} → {target}",
            f"permuting the output of {name} from {source} to {target} (the original's layout)",
            partial(transform_output, module, partial(permuted_output, order)),
        )
    for (source, target, order), (_, _, back) in zip(layouts, reversed(layouts), strict=True):
        yield Patch(
            "layout",
            f"input {source} → {target}, output back",
            f"running {name} on its input permuted from {source} to {target}, and its output permuted back (it expects {target})",
            all_of(
                partial(transform_input, module, partial(permuted, order)),
                partial(transform_output, module, partial(permuted_output, back)),
            ),
        )
        yield Patch(
            "layout",
            f"input {source} → {target}",
            f"permuting the input of {name} from {source} to {target}",
            partial(transform_input, module, partial(permuted, order)),
        )


def layout_patches(culprit: Culprit) -> Iterator[Patch]:
    """A square weight transposed (Conv1D keeps [in, out], Linear [out, in]: a square one loads
    either way); channels-first and channels-last mixed up around a conv or a norm."""
    for name, module in culprit.submodules():
        weight = module._parameters.get("weight")
        if weight is not None and weight.dim() == 2 and weight.shape[0] == weight.shape[1]:
            yield Patch("layout", f"{name}.weight transposed", f"transposing {name}.weight", partial(replace_by, weight, torch.t))
    yield from channel_layout_patches(culprit)


# -- swapped tensors -------------------------------------------------------------------------------


def direct_parameters(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, tensor) for name, tensor in module._parameters.items() if tensor is not None]


def exchangeable(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    """Two modules of one class whose parameters have the same names and shapes."""
    shapes = [[(name, tuple(tensor.shape)) for name, tensor in direct_parameters(module)] for module in (first, second)]
    return first is not second and type(first) is type(second) and bool(shapes[0]) and shapes[0] == shapes[1]


def sibling_pairs(culprit: Culprit) -> Iterator[tuple[str, torch.nn.Module, str, torch.nn.Module]]:
    """Exchangeable pairs of modules under one parent: the culprit and each of its siblings
    (q and k, gate and up), then pairs inside the culprit."""
    if culprit.name:
        parent_name, _, own_name = culprit.name.rpartition(".")
        parent = culprit.model.get_submodule(parent_name) if parent_name else culprit.model
        for sibling_name, sibling in parent.named_children():
            if sibling_name != own_name and exchangeable(culprit.module, sibling):
                yield culprit.name, culprit.module, ".".join(part for part in (parent_name, sibling_name) if part), sibling
    for name, module in culprit.submodules():
        for (first_name, first), (second_name, second) in combinations(module.named_children(), 2):
            if exchangeable(first, second):
                prefix = "" if name == "(root)" else name + "."
                yield prefix + first_name, first, prefix + second_name, second


def output_dimension(module: torch.nn.Module, weight: torch.Tensor) -> int:
    """The weight's dimension along which its outputs run (1 for GPT-2's Conv1D, 0 for Linear)."""
    bias = module._parameters.get("bias")
    if bias is not None and bias.dim() == 1 and weight.shape[0] != weight.shape[1]:
        return 0 if bias.shape[0] == weight.shape[0] else 1
    return 1 if type(module).__name__ == "Conv1D" else 0


def exchange_blocks(tensor: torch.Tensor, dimension: int, blocks: int, first: int, second: int) -> torch.Tensor:
    pieces = list(tensor.chunk(blocks, dim=dimension))
    pieces[first], pieces[second] = pieces[second], pieces[first]
    return torch.cat(pieces, dim=dimension)


def fused_block_patches(name: str, module: torch.nn.Module) -> Iterator[Patch]:
    """Blocks of a fused projection (q/k/v, gate/up) exchanged, in its weight and bias alike."""
    weight = module._parameters.get("weight")
    if weight is None or weight.dim() != 2:
        return
    dimension = output_dimension(module, weight)
    outputs, inputs = weight.shape[dimension], weight.shape[1 - dimension]
    bias = module._parameters.get("bias")
    for blocks, labels in ((3, "qkv"), (2, "12")):
        if outputs % blocks or outputs < 2 * inputs:
            continue
        for first, second in combinations(range(blocks), 2):
            changes = [
                partial(replace_by, weight, partial(exchange_blocks, dimension=dimension, blocks=blocks, first=first, second=second))
            ]
            if bias is not None and bias.dim() == 1 and bias.shape[0] == outputs:
                changes.append(partial(replace_by, bias, partial(exchange_blocks, dimension=0, blocks=blocks, first=first, second=second)))
            which = f"{labels[first]} and {labels[second]}" if blocks == 3 else "the two halves"
            yield Patch(
                "swap",
                f"{name} {labels[first]} <-> {labels[second]}" if blocks == 3 else f"{name} halves",
                f"exchanging {which} of the fused projection {name}",
                all_of(*changes),
            )


def swap_patches(culprit: Culprit) -> Iterator[Patch]:
    """Two same-shaped modules' weights exchanged (q/k, gate/up), or blocks of a fused projection."""
    for first_name, first, second_name, second in sibling_pairs(culprit):
        changes = [
            partial(exchange_values, tensor, second._parameters[parameter_name])  # type: ignore[arg-type]
            for parameter_name, tensor in direct_parameters(first)
        ]
        yield Patch(
            "swap", f"{first_name} <-> {second_name}", f"exchanging the weights of {first_name} and {second_name}", all_of(*changes)
        )
    for name, module in culprit.submodules():
        yield from fused_block_patches(name, module)


# -- dropout ---------------------------------------------------------------------------------------


def calls_dropout(module: torch.nn.Module) -> bool:
    """The module's forward mentions dropout: ``F.dropout(..., training=True)``, or a
    ``dropout_p`` passed to scaled_dot_product_attention, stays on in eval mode."""
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False
    return "dropout(" in source or "dropout_p" in source


def without_dropout(values: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return values


def attention_without_dropout(attention: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """scaled_dot_product_attention with its ``dropout_p`` (the fifth argument) forced to 0."""

    def attend(*args: object, **kwargs: object) -> torch.Tensor:
        if len(args) > 4:
            args = (*args[:4], 0.0, *args[5:])
        if "dropout_p" in kwargs:
            kwargs["dropout_p"] = 0.0
        return attention(*args, **kwargs)

    return attend


def dropout_patches(culprit: Culprit) -> Iterator[Patch]:
    """A dropout left active: a Dropout with p > 0 in training mode (the culprit put back in eval
    mode), or a functional dropout called with ``training=True`` or a ``dropout_p`` given to
    scaled_dot_product_attention whatever the mode (both made inactive during the call)."""
    modules = [module for _, module in culprit.submodules()]
    if any(module.training for module in modules):
        yield Patch(
            "dropout",
            "eval mode",
            f"putting {culprit.full_name('')} in eval mode (a dropout left in training mode)",
            partial(training_mode, culprit.module, False),
        )
    if any(calls_dropout(module) for module in modules):
        yield Patch(
            "dropout",
            "functional dropout off",
            f"turning off the functional dropout inside {culprit.full_name('')} (F.dropout with training=True, "
            "or scaled_dot_product_attention's dropout_p, left on in eval mode)",
            all_of(
                partial(set_attribute, F, "dropout", without_dropout),
                partial(set_attribute, torch, "dropout", without_dropout),
                partial(set_attribute, F, "scaled_dot_product_attention", attention_without_dropout(F.scaled_dot_product_attention)),
            ),
        )


# -- residual --------------------------------------------------------------------------------------


def with_residual(output: torch.Tensor, first_input: torch.Tensor | None) -> torch.Tensor | None:
    if first_input is None or first_input.shape != output.shape:
        return None
    return output + first_input


def residual_patches(culprit: Culprit) -> Iterator[Patch]:
    """A forgotten ``residual + hidden_states``: the culprit's own input added to its output, or
    the input of one of its submodules (the residual of a block's second half starts there)."""
    if is_activation(culprit.module) or not any(True for _ in culprit.module.children()):
        return
    name = culprit.full_name("")
    yield Patch(
        "residual",
        f"input of {name}",
        f"adding the input of {name} to its output (a missing residual connection)",
        partial(transform_output, culprit.module, with_residual),
    )
    for child_name, child in culprit.module.named_children():
        yield Patch(
            "residual",
            f"input of {culprit.full_name(child_name)}",
            f"adding the input of {culprit.full_name(child_name)} to the output of {name} (a missing residual connection)",
            partial(add_input_of, child, culprit.module),
        )


# -- weights from the original ---------------------------------------------------------------------


def persistent_tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    buffers = [
        (name, tensor)
        for name, tensor in module._buffers.items()
        if tensor is not None and name not in module._non_persistent_buffers_set and tensor.is_floating_point()
    ]
    return direct_parameters(module) + buffers


def original_sources(tensor: torch.Tensor, source: torch.Tensor) -> list[tuple[torch.Tensor, bool]]:
    """The original tensor as it is and transposed, where the shape fits and the values differ
    from the ported tensor's (a tensor that already holds them is no hypothesis)."""
    fitting = []
    if tuple(source.shape) == tuple(tensor.shape):
        fitting.append((source, False))
    if source.dim() == 2 and tuple(source.shape[::-1]) == tuple(tensor.shape):
        fitting.append((source.t(), True))
    current = tensor.detach()
    return [(values, transposed) for values, transposed in fitting if not torch.equal(values.to(current.dtype), current)]


def counterpart_weight_patches(culprit: Culprit, name: str, module: torch.nn.Module) -> Iterator[Patch]:
    """The module's tensors replaced by its counterpart's in the paired original module (same
    name, else same position), as they are or transposed; a bias added where only the original
    has one; and every tensor of the module at once."""
    counterpart = culprit.counterpart(name)
    if counterpart is None or counterpart.module is None:
        return
    originals = persistent_tensors(counterpart.module)
    by_name = dict(originals)
    whole: dict[str, Callable[[], Undo]] = {}  # the first hypothesis for each tensor
    for position, (leaf, tensor) in enumerate(persistent_tensors(module)):
        source_leaf = leaf if leaf in by_name else (originals[position][0] if position < len(originals) else None)
        if source_leaf is None:
            continue
        for values, transposed in original_sources(tensor, by_name[source_leaf]):
            how = " (transposed)" if transposed else ""
            change = partial(replace_values, tensor, values)
            whole.setdefault(leaf, change)
            yield Patch(
                "weight",
                f"{name}.{leaf} <- {counterpart.name}.{source_leaf}{how}",
                f"replacing {name}.{leaf} by the original's {counterpart.name}.{source_leaf}{how}",
                change,
            )
    original_bias = by_name.get("bias")
    if "bias" in module._parameters and module._parameters["bias"] is None and original_bias is not None and original_bias.dim() == 1:
        added = torch.nn.Parameter(original_bias.detach().clone(), requires_grad=False)
        yield Patch(
            "weight",
            f"{name}.bias <- {counterpart.name}.bias (added)",
            f"adding the original's bias {counterpart.name}.bias to {name}",
            partial(set_attribute, module, "bias", added),
        )
    if len(whole) > 1:
        yield Patch(
            "weight",
            f"{name}.* <- {counterpart.name}.*",
            f"replacing every tensor of {name} by the original's in {counterpart.name}",
            all_of(*whole.values()),
        )


MOST_PIECES_REORDERED = 4  # a tensor assembled from more pieces than this is not tried in every other order


def piece_values(originals: Mapping[str, torch.Tensor], piece: Piece, start: int, stop: int) -> torch.Tensor:
    """Lines ``start:stop`` of the piece's original tensor along its axis, transposed as the piece is."""
    original = originals[piece.original]
    block = original[:, start:stop] if piece.axis == "columns" else original[start:stop]
    return block.t() if piece.transposed else block


def piece_text(piece: Piece, start: int, stop: int, whole: bool = False) -> str:
    """How the detail names a block: ``c_attn.weight[0:64] (rows)``, ``c_attn.weight[:, 0:64] (columns, transposed)``."""
    if whole:
        return piece.original + (" (transposed)" if piece.transposed else "")
    where = {"rows": f"[{start}:{stop}] (rows", "columns": f"[:, {start}:{stop}] (columns", "elements": f"[{start}:{stop}] ("}[piece.axis]
    return (piece.original + where + (", transposed)" if piece.transposed else ")")).replace(" ()", "")


def line_count(originals: Mapping[str, torch.Tensor], piece: Piece) -> int:
    original = originals[piece.original]
    return int(original.shape[1] if piece.axis == "columns" else original.shape[0])


BlockKey = tuple[str, str, int, int, bool]  # original, axis, start, stop, transposed


def block_key(piece: Piece, start: int, stop: int) -> BlockKey:
    return piece.original, piece.axis, start, stop, piece.transposed


def block_usage(sources: Mapping[str, TensorSource]) -> Counter[BlockKey]:
    """How many of the culprits' tensors hold each block of an original tensor."""
    return Counter(block_key(piece, piece.start, piece.stop) for source in sources.values() for piece in source.pieces)


def other_blocks(originals: Mapping[str, torch.Tensor], piece: Piece, usage: Counter[BlockKey]) -> Iterator[tuple[torch.Tensor, str]]:
    """A slice taken at the wrong offset: another block of the same length of its original (q's
    rows taken where k's are, in a fused qkv). Only where the weights check shows the mark such
    a slip leaves: the block is held twice, or the other block by none of the culprits' tensors
    (a clean split, each block held once, has nothing to try)."""
    length, lines = piece.stop - piece.start, line_count(originals, piece)
    if length <= 0 or lines % length or piece.start % length:
        return
    held_twice = usage[block_key(piece, piece.start, piece.stop)] > 1
    for start in range(0, lines, length):
        if start != piece.start and (held_twice or not usage[block_key(piece, start, start + length)]):
            yield piece_values(originals, piece, start, start + length), piece_text(piece, start, start + length)


def reordered_pieces(originals: Mapping[str, torch.Tensor], pieces: list[Piece]) -> Iterator[tuple[torch.Tensor, str]]:
    """A tensor assembled from blocks in the wrong order: one original's lines in its own order
    (a permutation of rows), or the blocks of several (q, k, v fused) in every other order."""
    dimension = 1 if (pieces[0].axis == "columns") != pieces[0].transposed else 0  # along which the ported tensor's blocks lie
    one_original = len({piece.original for piece in pieces}) == 1
    if one_original and sum(piece.stop - piece.start for piece in pieces) == line_count(originals, pieces[0]):
        first = pieces[0]
        in_order = piece_values(originals, first, 0, line_count(originals, first))
        yield in_order, f"{piece_text(first, 0, 0, whole=True)} ({first.axis} in its own order)"
        return
    if len(pieces) > MOST_PIECES_REORDERED:
        return
    blocks = [(piece_values(originals, piece, piece.start, piece.stop), piece) for piece in pieces]
    for order in permutations(range(len(blocks))):
        if list(order) == sorted(order):
            continue
        ordered = [blocks[index][1] for index in order]
        texts = [
            piece_text(piece, piece.start, piece.stop, whole=piece.stop - piece.start == line_count(originals, piece)) for piece in ordered
        ]
        yield torch.cat([blocks[index][0] for index in order], dim=dimension), f"cat({', '.join(texts)})"


def matched_sources(
    originals: Mapping[str, torch.Tensor], source: TensorSource, usage: Counter[BlockKey]
) -> Iterator[tuple[torch.Tensor, str]]:
    """What the tensor should have been, by where the weights check found its values: another
    block of the tensor it was sliced from, its blocks in another order, or its original's values
    in their own order (the same values, rearranged)."""
    if any(piece.original not in originals for piece in source.pieces):
        return
    if source.how == "slice" and len(source.pieces) == 1:
        yield from other_blocks(originals, source.pieces[0], usage)
    elif source.how == "assembled" and source.pieces:
        yield from reordered_pieces(originals, source.pieces)
    elif source.how == "rearranged" and source.original is not None and source.original in originals:
        yield originals[source.original], f"{source.original} (its values in its own order)"


def found_text(source: TensorSource) -> str:
    """What the weights check found the tensor holds: "a slice of c_attn.weight: rows 64:128"."""
    article = {"slice": "a slice of", "assembled": "blocks assembled from", "rearranged": "the values, rearranged, of"}[source.how]
    return f"{article} {source.original}" + (f": {source.detail}" if source.detail else "")


def value_matched_weight_patches(culprit: Culprit, name: str, module: torch.nn.Module) -> Iterator[Patch]:
    """The module's tensors replaced by what the weights check's value matching says they were
    meant to be (see :func:`matched_sources`), one at a time; then its weight and bias together,
    moved the same way (a fused projection's blocks reordered in both). Needs the original's state dict."""
    candidates: dict[str, list[tuple[torch.Tensor, str]]] = {}
    usage = block_usage(culprit.weight_sources)
    for leaf, tensor in persistent_tensors(module):
        tensor_name = culprit.tensor_name(name, leaf)
        source = culprit.weight_sources.get(tensor_name)
        if source is None:
            continue
        current = tensor.detach()
        found = candidates[leaf] = [
            (values, text)
            for values, text in matched_sources(culprit.original_tensors, source, usage)
            if tuple(values.shape) == tuple(current.shape)
        ]
        for values, text in found:
            if torch.equal(values.to(current.dtype), current):
                continue
            yield Patch(
                "weight",
                f"{tensor_name} <- {text}",
                f"replacing {tensor_name} by the original's {text} (it holds {found_text(source)})",
                partial(replace_values, tensor, values),
            )
    weights, biases = candidates.get("weight", []), candidates.get("bias", [])
    if not weights or len(weights) != len(biases):  # the same moves, enumerated in the same order, for both
        return
    weight, bias = dict(persistent_tensors(module))["weight"], dict(persistent_tensors(module))["bias"]
    for (weight_values, weight_text), (bias_values, bias_text) in zip(weights, biases, strict=True):
        weight_name, bias_name = culprit.tensor_name(name, "weight"), culprit.tensor_name(name, "bias")
        yield Patch(
            "weight",
            f"{weight_name} <- {weight_text}, {bias_name} <- {bias_text}",
            f"replacing {weight_name} by the original's {weight_text} and {bias_name} by {bias_text}",
            all_of(partial(replace_values, weight, weight_values), partial(replace_values, bias, bias_values)),
        )


def weight_patches(culprit: Culprit) -> Iterator[Patch]:
    """A parameter or buffer replaced by its counterpart in the paired original module, then by
    what the weights check's value matching points to (a slice at the wrong offset, blocks in the
    wrong order, rows permuted)."""
    for name, module in culprit.submodules():
        yield from counterpart_weight_patches(culprit, name, module)
    for name, module in culprit.submodules():
        yield from value_matched_weight_patches(culprit, name, module)


# The kinds in priority order: tried in this order, and exact fixes ranked in it.
KINDS: dict[str, Callable[[Culprit], Iterator[Patch]]] = {
    "activation": activation_patches,
    "eps": eps_patches,
    "scale": scale_patches,
    "heads": head_count_patches,
    "rope_permutation": rope_permutation_patches,
    "layout": layout_patches,
    "swap": swap_patches,
    "dropout": dropout_patches,
    "residual": residual_patches,
    "weight": weight_patches,
}


def patches_for(culprit: Culprit, skip: frozenset[str] = frozenset()) -> Iterator[Patch]:
    for kind, patches in KINDS.items():
        if kind not in skip:
            yield from patches(culprit)
