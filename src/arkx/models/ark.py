"""The Ark model: one shared backbone, a projector, and one head per dataset (no label merging), plus the
branches of the other task kinds (segmentation, detection) built when a task of that kind is added.

``model(x, head)`` returns ``(projection, logits)``: the projection feeds the consistency loss and is the
embedding released for reuse; classification heads sit on the projection, as in the authors' model, so the
embedding is exactly what every head was trained to read. This path is Ark's and never changes.

The API the task kinds (:mod:`arkx.tasks`) build on, kept stable for them:

- ``model.forward_features(x, pyramid=False) -> Features(pooled, projection, pyramid, image_size)``
  (:mod:`arkx.models.features`); ``model.pyramid_channels`` / ``model.pyramid_strides`` describe the pyramid.
- Heads live in ``ModuleDict``s keyed by dataset head name, one per kind's ``head_attr``: ``model.heads``
  (classification; Ark checkpoints' keys), ``model.seg_heads``, ``model.det_heads``. They start empty, and an
  empty ``ModuleDict`` adds no state-dict keys, so an Ark model's state dict is what it always was.
  ``model.add_task(task)`` builds a head with ``get_kind(task.kind).build_head(task, model)``;
  ``model.add_head(task)`` is its classification alias (incremental pretraining adds a head and nothing else
  changes).
- Parts shared by every head of a kind (``seg_decoder``, ``det_encoder``) are built once, on first need, by
  ``model.ensure_branch(name, factory)``; a kind reads its options from ``model.branch_options[name]``.
  ``model.branch_config()`` (``branch_options`` completed by each built branch module's ``config`` dict: its
  options, not what the backbone determines) is saved with the model and passed back as ``branch_options``
  when it is rebuilt (:mod:`arkx.models.files`), so heads and branches get the same shapes.
- ``model.run_task(x, task, targets=None) -> (Features, output)`` computes the pyramid only for kinds that need
  it (``targets``: the kind's loss targets, given in training, e.g. for the detector's denoising queries);
  ``model.tasks()`` lists the tasks it has heads for (classification, then segmentation, then detection).
  New heads and branches are moved to the backbone's device when they are built.
- Parameters live in named groups by module path (:meth:`ArkModel.parameter_groups`): ``backbone``,
  ``projector``, ``heads/<name>``, ``seg_decoder``, ``seg_heads/<name>``, ``det_encoder``, ``det_heads/<name>``;
  freezing, Lock-Release and federated "shared vs local" state select groups by name, never by substring.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import ArkxValueError
from ..tasks import Task, get_kind
from .backbones import create_backbone
from .features import Features, backbone_features, pyramid_channels, pyramid_strides

#: The ModuleDicts of heads every model has (empty until a task of that kind is added), in listing order.
HEAD_ATTRS = ("heads", "seg_heads", "det_heads")


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":  # MICCAI Ark-6: Linear(enc->proj)-ReLU-Linear(proj->proj), so their released weights fit
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim))
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown projector kind {kind!r}; expected linear, mlp or none")


class ArkModel(nn.Module):
    """Backbone + projector + heads of every kind (see the module docstring for the API).

    Args:
        backbone: a timm model without classifier (``backbone(x)`` returns pooled features).
        heads: the tasks to build heads for (any kind), in order.
        projector: ``linear``, ``mlp`` or ``none``; ``projector_dim`` its output size.
        branch_options: options of the shared branches by name (e.g. ``{"seg_decoder": {"channels": 128}}``),
            read by the kinds when they build them.
    """

    def __init__(self, backbone: nn.Module, heads: Iterable[Task], projector: str = "linear",
                 projector_dim: int = 1376, branch_options: dict[str, dict] | None = None):
        super().__init__()
        self.backbone = backbone
        feat_dim = int(backbone.num_features)
        self.embed_dim = feat_dim if projector == "none" else projector_dim
        self.projector = build_projector(projector, feat_dim, self.embed_dim)
        self.branch_options: dict[str, dict] = {k: dict(v) for k, v in (branch_options or {}).items()}
        self._specs: dict[str, dict[str, Task]] = {}
        self._head_attrs: list[str] = []
        self._branches: list[str] = []
        for attr in HEAD_ATTRS:
            self._head_dict(attr)
        for task in heads:
            self.add_task(task)

    # -- heads -----------------------------------------------------------------------------------------
    @property
    def head_specs(self) -> dict[str, Task]:
        """The classification tasks by head name (the Ark heads of ``model.heads``)."""
        return self._specs["heads"]

    @head_specs.setter
    def head_specs(self, specs: dict[str, Task]) -> None:
        self._specs["heads"] = dict(specs)

    def add_task(self, task: Task) -> nn.Module:
        """Build the head of ``task`` (through its kind) into ``getattr(model, kind.head_attr)[task.name]``."""
        kind = get_kind(task.kind)
        heads = self._head_dict(kind.head_attr)
        if task.name in heads:
            raise ValueError(f"head {task.name!r} exists already in {kind.head_attr}")
        head = kind.build_head(task, self).to(self._device())
        heads[task.name] = head
        self._specs[kind.head_attr][task.name] = task
        return head

    def add_head(self, spec: Task) -> None:
        """Add a classification head (the Ark alias of :meth:`add_task`)."""
        if not spec.is_classification:
            raise ValueError(f"add_head adds classification heads; {spec.name!r} is a {spec.kind} task: use add_task")
        self.add_task(spec)

    def remove_heads(self) -> None:
        """Drop every head of every kind (fine-tuning attaches new ones); shared branches stay, so a
        pretrained decoder can serve the new head."""
        for attr in self._head_attrs:
            setattr(self, attr, nn.ModuleDict())
            self._specs[attr] = {}

    def tasks(self) -> list[Task]:
        """The tasks this model has heads for: classification first, then segmentation, then detection."""
        out = []
        for attr in self._head_attrs:
            specs = self._specs.get(attr, {})
            out.extend(specs[name] for name in getattr(self, attr) if name in specs)
        return out

    def head_config(self) -> list[dict]:
        """Every head as ``dict(name, kind, label_names)``: what rebuilds the model (with :meth:`branch_config`)."""
        return [task.as_dict() for task in self.tasks()]

    def _head_dict(self, attr: str) -> nn.ModuleDict:
        if attr not in self._head_attrs:
            if attr in self._modules or hasattr(self, attr):
                raise ValueError(f"{attr!r} is not a head dictionary of this model")
            self.add_module(attr, nn.ModuleDict())
            self._head_attrs.append(attr)
            self._specs.setdefault(attr, {})
        return getattr(self, attr)

    # -- shared branches -------------------------------------------------------------------------------
    def ensure_branch(self, name: str, factory: Callable[[], nn.Module]) -> nn.Module:
        """The shared branch module ``name`` (e.g. ``seg_decoder``), built by ``factory()`` the first time."""
        if name in self._branches:
            return getattr(self, name)
        if name in self._modules or hasattr(self, name):
            raise ValueError(f"{name!r} is a part of the model already, not a branch")
        self.add_module(name, factory().to(self._device()))
        self._branches.append(name)
        return getattr(self, name)

    def branches(self) -> list[str]:
        """Names of the shared branches built so far, in order."""
        return list(self._branches)

    def branch_config(self) -> dict[str, dict]:
        """The options that rebuild this model's branches and heads: ``branch_options`` (which may also hold
        options of heads, e.g. ``det_decoder``), each built branch's options completed from its module's
        ``config`` (the defaults it was built with, so a saved model does not depend on today's defaults)."""
        config = {name: dict(options) for name, options in self.branch_options.items()}
        for name in self._branches:
            config[name] = {**config.get(name, {}), **dict(getattr(getattr(self, name), "config", {}))}
        return config

    # -- forward ---------------------------------------------------------------------------------------
    @property
    def pyramid_channels(self) -> list[int]:
        """Channels of each pyramid level, finest first."""
        return pyramid_channels(self.backbone)

    @property
    def pyramid_strides(self) -> list[int]:
        """Nominal stride of each pyramid level (a map's side is the input's divided by it, rounded up or down
        by the architecture)."""
        return pyramid_strides(self.backbone)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[B, num_features]``."""
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding (projector output) ``[B, embed_dim]``."""
        return self.projector(self.backbone(x))

    def forward_features(self, x: torch.Tensor, pyramid: bool = False) -> Features:
        """Pooled features, projection and (``pyramid=True``) the multi-scale maps, from one backbone pass."""
        if pyramid:
            pooled, maps = backbone_features(self.backbone, x)
        else:
            pooled, maps = self.backbone(x), None
        return Features(pooled, self.projector(pooled), maps, (int(x.shape[-2]), int(x.shape[-1])), {})

    def forward(self, x: torch.Tensor, head: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.embed(x)
        return z, (self.heads[head](z) if head is not None else None)

    def run_task(self, x: torch.Tensor, task: Task, targets: object = None) -> tuple[Features, object]:
        """Features of ``x`` (the pyramid only when ``task``'s kind needs it) and the output of its head.

        ``targets`` (the kind's loss targets) is passed to the head in training, e.g. for the detector's
        denoising queries; leave it out for inference."""
        kind = get_kind(task.kind)
        if task.name not in self._specs.get(kind.head_attr, {}) or task.name not in getattr(self, kind.head_attr):
            raise ArkxValueError(f"the model has no {task.kind} head {task.name!r}; its tasks: "
                                 + (", ".join(f"{t.name} ({t.kind})" for t in self.tasks()) or "none"))
        features = self.forward_features(x, pyramid=kind.needs_pyramid)
        return features, kind.head_output(self, features, task, targets=targets)

    # -- parameter groups ------------------------------------------------------------------------------
    def group_of(self, parameter_name: str) -> str:
        """The group of a parameter, from its module path: ``<head dict>/<head name>`` for heads, else the
        model's child it lives in (``backbone``, ``projector``, a branch)."""
        parts = parameter_name.split(".")
        if parts[0] in self._head_attrs and len(parts) > 2:
            return f"{parts[0]}/{parts[1]}"
        return parts[0]

    def parameter_groups(self) -> dict[str, list[str]]:
        """``{group: parameter names}`` covering every parameter exactly once (groups without parameters, e.g.
        ``projector`` when it is ``none``, are listed empty)."""
        groups: dict[str, list[str]] = {}
        for child, module in self.named_children():
            if child in self._head_attrs:
                for name in module:
                    groups[f"{child}/{name}"] = []
            else:
                groups[child] = []
        for name, _ in self.named_parameters():
            groups.setdefault(self.group_of(name), []).append(name)
        return groups

    def group_parameters(self, groups: Iterable[str]) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of every parameter in ``groups`` (exact group names), in model order."""
        wanted = self._check_groups(groups)
        return [(name, p) for name, p in self.named_parameters() if self.group_of(name) in wanted]

    def freeze(self, groups: Iterable[str]) -> list[str]:
        """Stop gradients to the parameters of ``groups``; returns their names."""
        return self._set_trainable(groups, False)

    def unfreeze(self, groups: Iterable[str]) -> list[str]:
        """Let gradients reach the parameters of ``groups`` again; returns their names."""
        return self._set_trainable(groups, True)

    def _set_trainable(self, groups: Iterable[str], trainable: bool) -> list[str]:
        selected = self.group_parameters(groups)
        for _, p in selected:
            p.requires_grad_(trainable)
        return [name for name, _ in selected]

    def _check_groups(self, groups: Iterable[str]) -> set[str]:
        if isinstance(groups, str):  # a lone name would otherwise be read as its characters
            groups = [groups]
        wanted = set(groups)
        known = self.parameter_groups()
        unknown = sorted(wanted - set(known))
        if unknown:
            raise ArkxValueError(f"unknown parameter group(s) {', '.join(unknown)}; the model's groups: "
                                 f"{', '.join(known)}")
        return wanted

    def _device(self) -> torch.device:
        parameter = next(self.backbone.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")


def build_model(model_cfg, heads: Iterable[Task], branch_options: dict[str, dict] | None = None) -> ArkModel:
    """An ArkModel from a :class:`arkx.config.ModelConfig` (``branch_options``: see :class:`ArkModel`)."""
    backbone = create_backbone(model_cfg.backbone, model_cfg.checkpoint,
                               checkpoint_resize=model_cfg.checkpoint_resize, **model_cfg.backbone_kwargs)
    return ArkModel(backbone, heads, projector=model_cfg.projector, projector_dim=model_cfg.projector_dim,
                    branch_options=branch_options)
