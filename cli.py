"""The `retain` command line: a thin front over `registry` (the store) and `retain` (the method).

Commands load lazily, so query commands (`lineage`, `scores`, `log`, ...) never import torch.
Each command lives in the module named below; this file only wires them up and turns domain
errors into one-line messages with a non-zero exit.
"""
from __future__ import annotations

import importlib
import sys

import click

# name -> "module:attribute"; modules under registry/ never import torch.
COMMANDS: dict[str, str] = {
    "init": "registry.commands:init_cmd",
    "base": "registry.commands:base_group",
    "lineage": "registry.commands:lineage_cmd",
    "log": "registry.commands:log_cmd",
    "show": "registry.commands:show_cmd",
    "scores": "registry.commands:scores_cmd",
    "rollback": "registry.commands:rollback_cmd",
    "export": "registry.commands:export_cmd",
    "verify": "registry.commands:verify_cmd",
    "gc": "registry.commands:gc_cmd",
    "db": "registry.commands:db_group",
    "merge": "retain.commands.merge_cmds:merge_cmd",
    "partitions": "retain.commands.merge_cmds:partitions_cmd",
    "demos": "retain.commands.sim_cmds:demos_group",
    "pretrain": "retain.commands.policy_cmds:pretrain_cmd",
    "eval": "retain.commands.policy_cmds:eval_cmd",
    "learn": "retain.commands.learn_cmds:learn_cmd",
    "replay": "retain.commands.learn_cmds:replay_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        from registry.errors import RegistryError

        try:
            return super().invoke(ctx)
        except RegistryError as e:
            click.echo(f"Error: {one_line(str(e))}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted: nothing was committed.", err=True)
            ctx.exit(130)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import platform

    from retain.provenance import code_version  # stdlib only at import: --version stays instant

    click.echo(f"retain {code_version()} (python {platform.python_version()})")
    ctx.exit(0)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version (with the git commit when run from a checkout) and exit.")
@click.option("--home", envvar="RETAIN_HOME", default=None, help="Registry home (default ./.retain).")
@click.option("--db", "db_url", envvar="RETAIN_DB_URL", default=None, help="SQLAlchemy URL (default sqlite in the home).")
@click.option("--store", "store_url", envvar="RETAIN_STORE_URL", default=None, help="fsspec URL of the blob store (default HOME/store).")
@click.pass_context
def cli(ctx: click.Context, home: str | None, db_url: str | None, store_url: str | None) -> None:
    """A continual-learning skill registry for robot policies (RETAIN weight merging)."""
    ctx.obj = {"home": home, "db_url": db_url, "store_url": store_url}


def one_line(message: str) -> str:
    """A message as one line: a control character a user put in a name is shown escaped, never obeyed."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def main() -> None:
    cli(prog_name="retain")


if __name__ == "__main__":
    sys.exit(main())
