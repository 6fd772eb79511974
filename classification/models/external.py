"""Any timm or torchvision classifier as a zoo model: `MODEL.STUDENT` / `MODEL.TEACHER` `timm:<name>` or
`torchvision:<name>` (`build_model` resolves the prefix through `register_library`).

The wrapper keeps the zoo's contract (registry.py): forward gives a ModelOutput (logits, the stage maps finest
first, the pooled vector the classifier reads, no pre-activation maps), `feature_info` names the maps as every zoo
model does (`declare_features`: `stem`, `stage1`, ...) and `pooled_channels` is the pooled width, so every
distiller taps a library model by the same names as a zoo model.

* timm: the maps its own `feature_info` declares, computed by `forward_intermediates`; the head runs on the final
  features (`forward_head`, once with `pre_logits` for the pooled vector).
* torchvision: a probe forward at PROBE_SIDE pixels finds the stage outputs (`stage_outputs`: along the chain of
  the model's modules, the last output at each resolution, up to the global pooling) and the classifier (the
  Linear whose output the model returns); `create_feature_extractor` then returns those maps, the classifier's
  input (pooled) and its output (logits).

The finest map is named `stem` whatever the library calls it (timm's ConvNeXt reports its first stage first), so
the defaults of every method (UniKD's `stem`, `stage*`) find it on any model. No pre-activation maps: a term that
asks for them (ReviewKD's teacher side, OFD, UniKD authors_code) reads the activated maps, as `Batch.feature`
documents.

Weights: the wrapper's state dict is the library model's under `net.`; a state dict with the library's own keys
(what timm and torchvision download, or `torch.save(model.state_dict())` of the library model) loads as it is: a
load hook adds the prefix, after checking that the file's classifier has the model's class count.
`load_safetensors` reads `.safetensors` files.

Each library is imported when its first model is built (safetensors when a file is read), so the zoo still
imports with torch alone, and a run of zoo models does not pay timm's second of import time.
"""
from __future__ import annotations

import difflib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from unikd.core.features import FeatureSpec

from .registry import ModelOutput, declare_features, register_library

logger = logging.getLogger(__name__)

NET = "net."  # prefix of the library model's keys in the wrapper's state dict
PROBE_SIDE = 224  # side of the probe image that finds a torchvision model's stages (its nominal input)
POOLED, LOGITS = "pooled", "logits"  # feature-extractor outputs besides the stage maps
GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class LibraryClassifier(nn.Module):
    """A timm or torchvision network (`net`) behind the zoo's contract (module docstring); subclasses implement
    `forward`. `sources` names the library's own module behind each declared map, for the log."""

    def __init__(self, arch: str, net: nn.Module, feature_info: list[FeatureSpec], sources: Sequence[str],
                 pooled_channels: int, num_classes: int, classifier: str) -> None:
        super().__init__()
        self.arch = arch
        self.net = net
        self.feature_info = feature_info
        self.pooled_channels = int(pooled_channels)
        self.num_classes = num_classes
        self.classifier_name = classifier  # qualified name in `net`; "" when the library gives no single module
        self.register_load_state_dict_pre_hook(accept_library_keys)
        maps = ", ".join(f"{spec.name} = {source} ({spec.channels} ch, /{spec.reduction})"
                         for spec, source in zip(feature_info, sources))
        logger.info("%s declares %s; pooled %d", arch, maps, self.pooled_channels)


def accept_library_keys(model: LibraryClassifier, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """Load-state-dict pre-hook: a key of the library model's own (no `net.`) gets the prefix, and a classifier
    whose row count is not the model's class count is refused, naming both counts."""
    for key in [k for k in state if k.startswith(prefix) and not k.startswith(prefix + NET)]:
        state[prefix + NET + key[len(prefix):]] = state.pop(key)
    weight = state.get(f"{prefix}{NET}{model.classifier_name}.weight") if model.classifier_name else None
    if weight is not None and weight.shape[0] != model.num_classes:
        raise ValueError(
            f"the weights hold a {weight.shape[0]}-class classifier ({model.classifier_name}), but {model.arch} "
            f"was built for {model.num_classes} classes: the class counts must agree"
        )


def unknown_model(library: str, name: str, known: Sequence[str]) -> KeyError:
    """KeyError naming the unknown model and the library's closest names."""
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return KeyError(f"unknown {library} model {name!r}{hint}")


def download_failed(arch: str, err: OSError) -> OSError:
    """What a failed pretrained download says: the cause and the offline way."""
    return OSError(f"could not fetch the pretrained weights of {arch} ({err}); without network, save them to a "
                   "file and name it in MODEL.STUDENT_WEIGHTS, with MODEL.PRETRAINED False")


def module_name(net: nn.Module, module: Any) -> str:
    """The qualified name of `module` in `net`, "" when it is none of net's modules (timm's pair of heads)."""
    return next((name for name, candidate in net.named_modules() if candidate is module), "")


# -- timm ----------------------------------------------------------------------------------------------------
class TimmClassifier(LibraryClassifier):
    """A timm model: the maps of its `feature_info` from `forward_intermediates`, then its head."""

    def __init__(self, arch: str, net: nn.Module, num_classes: int) -> None:
        if not hasattr(net, "forward_intermediates"):
            raise ValueError(f"{arch} has no forward_intermediates, which its stage maps are read with")
        info = list(net.feature_info)
        specs = declare_features([f["num_chs"] for f in info], [f["reduction"] for f in info], preact=False)
        pooled = getattr(net, "head_hidden_size", net.num_features)
        super().__init__(arch, net, specs, [f["module"] for f in info], pooled, num_classes,
                         module_name(net, net.get_classifier()))

    def forward(self, x: Tensor) -> ModelOutput:
        final, maps = self.net.forward_intermediates(x)
        return ModelOutput(self.net.forward_head(final), list(maps), self.net.forward_head(final, pre_logits=True),
                           None)


@register_library("timm")
def build_timm(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    """timm's `name` with a `num_classes`-way head (timm re-initialises a pretrained head of another size)."""
    import timm

    if not timm.is_model(name):
        raise unknown_model("timm", name, timm.list_models())
    try:
        net = timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
    except OSError as err:
        raise download_failed(f"timm:{name}", err) from err
    return TimmClassifier(f"timm:{name}", net, num_classes)


# -- torchvision ---------------------------------------------------------------------------------------------
@dataclass
class Call:
    """One module's first call in the probe forward: its position, input and output shapes, and the output
    itself for a Linear (the classifier is the Linear whose output the model returns)."""

    order: int
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    output: Tensor | None


def probe(net: nn.Module) -> tuple[dict[str, Call], Any]:
    """({module name: Call}, model output) of one eval-mode forward of a zero PROBE_SIDE image."""
    calls: dict[str, Call] = {}

    def record(name: str, module: nn.Module, args: tuple, output: Any) -> None:
        if name in calls:
            return
        shape = tuple(args[0].shape) if args and isinstance(args[0], Tensor) else None
        out_shape = tuple(output.shape) if isinstance(output, Tensor) else None
        calls[name] = Call(len(calls), shape, out_shape, output if isinstance(module, nn.Linear) else None)

    handles = [module.register_forward_hook(lambda m, a, o, name=name: record(name, m, a, o))
               for name, module in net.named_modules() if name]
    net.eval()
    try:
        with torch.no_grad():
            output = net(torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE))
    finally:
        for handle in handles:
            handle.remove()
    return calls, output


def map_reduction(shape: tuple[int, ...] | None) -> int | None:
    """The reduction of a probe map [1, C, S, S] (S > 1): PROBE_SIDE / S to the nearest power of two, since
    unpadded convolutions shave pixels off. None for anything else: vectors, token sequences, channels-last maps,
    globally pooled 1x1 maps."""
    if shape is None or len(shape) != 4 or shape[2] != shape[3] or shape[2] < 2:
        return None
    return 2 ** round(math.log2(PROBE_SIDE / shape[2]))


def resolution_changes(container: nn.Module, prefix: str, calls: dict[str, Call]) -> int:
    """How many of a container's called children output another resolution than they were given."""
    names = [prefix + name for name, _ in container.named_children() if prefix + name in calls]
    return sum(map_reduction(calls[n].input_shape) != map_reduction(calls[n].output_shape) for n in names)


def module_chain(module: nn.Module, prefix: str, calls: dict[str, Call]) -> list[tuple[str, nn.Module]]:
    """The modules that run one after another at `module`'s level, in call order. A child that was not called
    itself (a ModuleList) and a Sequential whose children change the resolution more than once (a whole
    backbone, such as MobileNet's `features`) are replaced by their own chains."""
    chain = []
    for name, child in module.named_children():
        qualname = prefix + name
        opened = qualname not in calls or (
            isinstance(child, nn.Sequential) and resolution_changes(child, qualname + ".", calls) > 1
        )
        chain += module_chain(child, qualname + ".", calls) if opened else [(qualname, child)]
    return sorted(chain, key=lambda item: calls[item[0]].order)


def stage_outputs(net: nn.Module, calls: dict[str, Call]) -> list[tuple[str, int, int]]:
    """(module name, channels, reduction) of the last output at each resolution along the chain, finest first,
    up to the global pooling: the first output that is no map, an adaptive pool, or a coarser-to-finer step."""
    stages: dict[int, tuple[str, int]] = {}
    for name, module in module_chain(net, "", calls):
        shape = calls[name].output_shape
        reduction = map_reduction(shape)
        if reduction is None or isinstance(module, GLOBAL_POOLS) or reduction < max(stages, default=0):
            break
        stages[reduction] = (name, shape[1])
    return [(name, channels, reduction) for reduction, (name, channels) in stages.items()]


def find_classifier(arch: str, calls: dict[str, Call], output: Any) -> str:
    """The name of the Linear whose output the model returns; ValueError when the logits come from no Linear."""
    names = [name for name, call in calls.items() if call.output is not None and call.output is output]
    if not names:
        raise ValueError(f"{arch} does not return the output of a Linear classifier, which the wrapper reads")
    return names[0]


def fit_classifier(net: nn.Module, name: str, num_classes: int) -> None:
    """Replace a pretrained classifier of another class count by a freshly initialised `num_classes`-way one."""
    old = net.get_submodule(name)
    if old.out_features != num_classes:
        net.set_submodule(name, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
        logger.info("%s: new %d-class classifier in place of the pretrained %d-class one", name, num_classes,
                    old.out_features)


def torchvision_network(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    """torchvision's `name`: random with `num_classes` outputs, or with its default pretrained weights (the
    classifier is fitted to `num_classes` once it is found)."""
    import torchvision

    if not pretrained:
        return torchvision.models.get_model(name, num_classes=num_classes)
    try:
        return torchvision.models.get_model(name, weights="DEFAULT")
    except OSError as err:
        raise download_failed(f"torchvision:{name}", err) from err


class TorchvisionClassifier(LibraryClassifier):
    """A torchvision model turned by `create_feature_extractor` into one returning its stage maps (named as
    its feature_info), the pooled vector and the logits."""

    def forward(self, x: Tensor) -> ModelOutput:
        out = self.net(x)
        return ModelOutput(out[LOGITS], [out[spec.name] for spec in self.feature_info], out[POOLED], None)


@register_library("torchvision")
def build_torchvision(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    """torchvision's classification model `name` wrapped to the zoo's contract (module docstring)."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise unknown_model("torchvision", name, known)
    arch = f"torchvision:{name}"
    net = torchvision_network(name, num_classes, pretrained)
    calls, output = probe(net)
    classifier = find_classifier(arch, calls, output)
    fit_classifier(net, classifier, num_classes)
    stages = stage_outputs(net, calls)
    if not stages:
        raise ValueError(f"{arch} outputs no NCHW feature map before its global pooling, so it has no stages")
    specs = declare_features([c for _, c, _ in stages], [r for _, _, r in stages], preact=False)
    _, eval_nodes = get_graph_node_names(net)
    pooled_node = eval_nodes[eval_nodes.index(classifier) - 1]
    return_nodes = {node: spec.name for (node, _, _), spec in zip(stages, specs)}
    extractor = create_feature_extractor(net, {**return_nodes, pooled_node: POOLED, classifier: LOGITS})
    return TorchvisionClassifier(arch, extractor, specs, [node for node, _, _ in stages],
                                 net.get_submodule(classifier).in_features, num_classes, classifier)


# -- weight files --------------------------------------------------------------------------------------------
def load_safetensors(model: nn.Module, path: str | Path, arch: str) -> nn.Module:
    """Load the `.safetensors` file `path` into `model` (an `arch`), or fail naming the file and the mismatch."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{arch} weights not found: {path}")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}); expected {arch} weights") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not hold {arch} weights: {' '.join(str(err).split())[:400]}") from None
    return model
