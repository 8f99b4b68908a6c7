"""Place a Flax DistilBERT on a device mesh by the logical axis names its parameters carry.

The model holds no engine code: each parameter only names its axes as metadata (``"vocab"``, ``"embed"``,
``"heads"``, ``"mlp"``; see ``modeling.py``), which does nothing by default. ``rules`` map logical names to mesh
axes; a name without a rule is replicated. Data parallelism needs no rule: replicate the model with
``shard_model(model, mesh)`` and shard the inputs on their batch axis.

    mesh = jax.make_mesh((2,), ("model",))
    shard_model(model, mesh, TENSOR_PARALLEL_RULES)      # attention heads, FFN and vocabulary split on "model"
    out = nnx.jit(lambda m, ids: m(ids))(model, input_ids)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Megatron-style tensor parallelism over a mesh axis named "model"
TENSOR_PARALLEL_RULES: tuple[tuple[str, str | None], ...] = (("heads", "model"), ("mlp", "model"), ("vocab", "model"))


def _rules(rules: Iterable[tuple[str, str | None]], mesh: Mesh | None = None) -> dict[str, Any]:
    try:
        table = {str(logical): axis for logical, axis in rules}
    except (TypeError, ValueError) as err:
        raise TypeError(f"rules must be (logical name, mesh axis or None) pairs, got {rules!r}") from err
    if mesh is not None:
        unknown = {name for axis in table.values() for name in _names(axis) if name not in mesh.axis_names}
        if unknown:
            raise ValueError(f"rules name mesh axes {sorted(unknown)} that the mesh lacks; its axes: {mesh.axis_names}")
    return table


def _names(axis: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """A mesh axis entry of a PartitionSpec (None, a name, or a tuple of names) as a tuple of names."""
    return () if axis is None else tuple(axis) if isinstance(axis, tuple) else (axis,)


def _spec(variable: nnx.Variable, table: dict[str, Any]) -> PartitionSpec:
    axes = variable.get_metadata().get("out_sharding") or ()
    return PartitionSpec(*(None if name is None else table.get(name) for name in axes))


def logical_partition_specs(model: nnx.Module, rules: Iterable[tuple[str, str | None]] = ()) -> nnx.State:
    """The model's state with a ``PartitionSpec`` in place of each value (as ``nnx.get_partition_spec``), logical
    names resolved by ``rules``; unmatched names and variables without axis names are replicated."""
    table = _rules(rules)
    return jax.tree.map(
        lambda v: v.replace(_spec(v, table)), nnx.state(model), is_leaf=lambda x: isinstance(x, nnx.Variable)
    )


def shard_model(model: nnx.Module, mesh: Mesh, rules: Iterable[tuple[str, str | None]] = ()) -> nnx.Module:
    """Move every variable of ``model`` onto ``mesh`` as ``rules`` say (in place); returns ``model``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (e.g. jax.make_mesh((2,), ('model',))), got {mesh!r}")
    table = _rules(rules, mesh)
    placements = []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Variable):
            spec, value = _spec(node, table), node.get_value()
            for dim, axis in enumerate(spec):
                size = math.prod(mesh.shape[name] for name in _names(axis))
                if value.shape[dim] % size:
                    raise ValueError(
                        f"cannot shard {'.'.join(map(str, path))} of shape {value.shape}: dimension {dim} "
                        f"({node.get_metadata()['out_sharding'][dim]!r}) does not divide over mesh axis {axis!r} of "
                        f"size {size}; choose sizes divisible by it or leave that logical axis out of the rules"
                    )
            placements.append((node, NamedSharding(mesh, spec)))
    for node, sharding in placements:  # checked everything first: never a half-sharded model
        node.set_value(jax.device_put(node.get_value(), sharding))
    return model
