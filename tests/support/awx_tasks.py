"""Print, as JSON, every task of a playbook as Ansible would run it: the module and its templated arguments.

    python awx_tasks.py <playbook> <extra vars as JSON>

One entry per loop item: ``{"task", "action", "args"}``. Ansible's own loader, variable manager and templar do
the work (the play's vars, extra vars, the collections' filters and lookups), in a process of its own so the
collection loader it installs does not meet the tests' imports. No module is run.
"""

import json
import sys
from pathlib import Path

from ansible import context
from ansible.inventory.manager import InventoryManager
from ansible.module_utils.common.collections import ImmutableDict
from ansible.parsing.dataloader import DataLoader
from ansible.playbook import Playbook
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar
from ansible.vars.manager import VariableManager

COLLECTIONS = Path(__file__).resolve().parents[2] / ".build" / "collections"


def rendered_tasks(playbook: str, extra_vars: dict) -> list[dict]:
    init_plugin_loader([str(COLLECTIONS)])
    context.CLIARGS = ImmutableDict(extra_vars=[json.dumps(extra_vars)], check=False, diff=False)
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources="localhost,")
    variables = VariableManager(loader=loader, inventory=inventory)
    host = inventory.get_host("localhost")
    out = []
    plays = Playbook.load(playbook, variable_manager=variables, loader=loader).get_plays()
    loader.set_basedir(str(Path(playbook).resolve().parent))  # as ansible-playbook does: playbook_dir
    for play in plays:
        for block in play.compile():
            for task in block.block:
                task_vars = variables.get_vars(play=play, host=host, task=task)
                templar = Templar(loader=loader, variables=task_vars)
                items = templar.template(task.loop) if task.loop is not None else [None]
                for item in items:
                    if item is not None:
                        templar = Templar(loader=loader, variables={**task_vars, "item": item})
                    out.append({"task": task.name, "action": task.action, "args": templar.template(task.args)})
    return out


if __name__ == "__main__":
    json.dump(rendered_tasks(sys.argv[1], json.loads(sys.argv[2])), sys.stdout, indent=1, default=str)
