"""The programs JAX compiles inside a block of code, for tests that repeated calls reuse compiled
programs and that first eager calls compile few one-operation programs (issue 12, item 5)."""

import jax
import jax.numpy as jnp

# the names of the programs JAX compiles for one jnp/lax operation executed outside any jitted function
_ONE_OP = frozenset(dir(jnp)) | frozenset(dir(jax.lax)) | {
    "stage", "_where", "_einsum", "_broadcast_arrays", "_normal", "_uniform", "_squeeze", "_mean", "unstack"}


class Programs:
    """``with Programs() as p:`` collects in ``p.names`` the name of every program lowered to XLA
    inside the block (a lowering happens also when the compiled program then comes from an on-disk
    cache, RMTJAX_TEST_COMPILATION_CACHE in tests/conftest.py); ``p.one_op`` lists the one-operation
    programs among them."""

    def __enter__(self):
        self.names = []
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event, duration, fun_name=None, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            self.names.append(fun_name or "")

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def one_op(self) -> list[str]:
        base = [n[4:-1] if n.startswith("jit(") else n for n in self.names]
        return [n for n in base if n in _ONE_OP or n.startswith(("_reduce", "_threefry"))]
