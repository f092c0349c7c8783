"""The test's hypervisor: moto says an instance runs, this makes it run.

moto reports instances as running at once and never executes their user data. This harness does
what the VM would: for every running instance tagged with the project it reads the user data,
installs the oct wheel it names with the real ``install-oct.sh`` (downloaded through the
presigned link from moto's S3, hash-checked, pip-installed into the VM's own venv), runs the node
side of it with that venv's Python (``oct-ctl bootstrap`` with the instance's reserved node id,
then ``oct-ctl``) on its own 127.0.0.N, and publishes where that "instance" is reachable in an
address book the CLI reads (``OCT_AWS_ADDRESS_BOOK``). An instance moto reports terminated is powered off:
its ``oct-ctl`` is killed, and the containers and processes it ran vanish with it.

Only the user data's dns settings are changed (port 53 belongs to one address per machine here;
DNS forwarding off), and the VM's venv sees this test venv's packages through a ``.pth`` file
instead of downloading the locked dependencies (the index is switched off: a version that differs
from the lock fails the boot). Everything else, secrets from SSM included, goes through the real
code, and the node runs the installed wheel, not this checkout.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path

import boto3

from octctl.providers.aws.resources import PROJECT_TAG
from octctl.providers.aws.user_data import artifact_link, deploy_file, parse_user_data
from octctl.providers.local.leftovers import kill_process_instances, remove_containers, stop_ingresses
from octctl.providers.local.provider import (
    FALLBACK_DNS_PORT,
    free_address,
    local_dns_port,
    node_name,
    nodes_dir,
)


@dataclass
class Vm:
    instance: str
    node: str
    cluster: str
    address: str
    data_dir: Path
    process: subprocess.Popen[bytes]


class Hypervisor:
    def __init__(self, project: str, root: Path, env: dict[str, str]) -> None:
        self.project = project
        self.root = root
        #: The harness plays the EBS disks: a folder per volume id (``ebs/<id>``) outlives every
        #: VM, and ``disks/<node>/<id>`` links to it while moto says it is attached to the node's
        #: instance: what the node mounts (``octctl.providers.aws.disks``, ``OCT_AWS_DISKS_DIR``).
        self.ebs = root / "ebs"
        self.disks = root / "disks"
        #: A snapshot is a copy of its volume's folder, taken when the harness first sees it; a
        #: volume made from one starts as a copy of that.
        self.snapshots = root / "snapshots"
        self.env = {**env, "MALLOC_ARENA_MAX": "2", "OCT_AWS_DISKS_DIR": str(self.disks)}
        self.book = root / "address-book.json"
        self.vms: dict[str, Vm] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hypervisor", daemon=True)
        self._ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")

    def __enter__(self) -> Hypervisor:
        self.root.mkdir(parents=True, exist_ok=True)
        self.book.write_text("{}")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for vm in list(self.vms.values()):
            self._power_off(vm)
        shutil.rmtree(nodes_dir(self.root), ignore_errors=True)  # frees the 127.0.0.N claims

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            try:
                self._sync()
            except Exception as e:  # keep watching; the test reads the errors
                self.errors.append(f"{type(e).__name__}: {e}")

    def _sync(self) -> None:
        answer = self._ec2.describe_instances(
            Filters=[{"Name": f"tag:{PROJECT_TAG}", "Values": [self.project]}]
        )
        for reservation in answer["Reservations"]:
            for instance in reservation["Instances"]:
                vm = self.vms.get(instance["InstanceId"])
                state = instance["State"]["Name"]
                if vm is None and state == "running":
                    self._boot(instance["InstanceId"])
                elif (
                    vm is not None and state in ("shutting-down", "terminated") and vm.process.poll() is None
                ):
                    self._power_off(vm)
        self._plug_disks()

    def _plug_disks(self) -> None:
        """Each VM sees exactly the disks moto says are attached to its instance."""
        by_project = [{"Name": f"tag:{PROJECT_TAG}", "Values": [self.project]}]
        for snapshot in self._ec2.describe_snapshots(OwnerIds=["self"], Filters=by_project)["Snapshots"]:
            taken = self.snapshots / snapshot["SnapshotId"]
            if not taken.exists() and (self.ebs / snapshot["VolumeId"]).exists():
                shutil.copytree(self.ebs / snapshot["VolumeId"], taken, symlinks=True)
        answer = self._ec2.describe_volumes(Filters=by_project)
        for volume in answer["Volumes"]:
            made_from = self.snapshots / (volume.get("SnapshotId") or "-")
            if made_from.exists() and not (self.ebs / volume["VolumeId"]).exists():
                shutil.copytree(made_from, self.ebs / volume["VolumeId"], symlinks=True)
        attached = {
            (a["InstanceId"], volume["VolumeId"])
            for volume in answer["Volumes"]
            for a in volume.get("Attachments", [])
            if a["State"] in ("attaching", "attached")
        }
        for vm in self.running().values():
            plugged = self.disks / vm.node
            plugged.mkdir(parents=True, exist_ok=True)
            for instance, volume in attached:
                if instance == vm.instance and not (plugged / volume).exists():
                    (self.ebs / volume).mkdir(parents=True, exist_ok=True)
                    (plugged / volume).symlink_to(self.ebs / volume)
            for link in plugged.iterdir():
                if (vm.instance, link.name) not in attached:
                    link.unlink()

    def snapshot_folder(self, snapshot: str) -> Path:
        return self.snapshots / snapshot

    def disk_folder(self, volume: str) -> Path:
        """The data of EBS volume ``volume``, as the harness keeps it whichever VM has it."""
        return self.ebs / volume

    def _boot(self, instance: str) -> None:
        raw = self._ec2.describe_instance_attribute(InstanceId=instance, Attribute="userData")
        user_data = base64.b64decode(raw["UserData"]["Value"]).decode()
        config = parse_user_data(user_data)
        address = free_address(self.root)
        data_dir = nodes_dir(self.root) / node_name(address)
        python = self._install(instance, user_data, data_dir)
        # Every "VM" here shares this host's network stack and firewall: the container guard, which
        # is per host, is tested on its own (tests/security/test_container_reach.py).
        config = config.model_copy(
            update={
                "dns_port": local_dns_port(address) or FALLBACK_DNS_PORT,
                "dns_upstreams": [],
                "guard_containers": False,
            }
        )
        (data_dir / "bootstrap.json").write_text(config.model_dump_json())
        boot = subprocess.run(
            [
                *(python, "-m", "octctl", "bootstrap"),
                *("--config", str(data_dir / "bootstrap.json"), "--data-dir", str(data_dir)),
                *("--address", address),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=data_dir,  # not the checkout: `-m` would import octctl from the working folder
        )
        if boot.returncode != 0:
            raise RuntimeError(f"bootstrap of {instance} failed: {boot.stderr.strip()}")
        with (data_dir / "oct-ctl.log").open("ab") as log:
            process = subprocess.Popen(
                [python, "-m", "octctl", "--data-dir", str(data_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                cwd=data_dir,
            )
        node = config.node or instance
        self.vms[instance] = Vm(instance, node, config.cluster, address, data_dir, process)
        book = {vm.instance: vm.address for vm in self.vms.values() if vm.process.poll() is None}
        tmp = self.book.with_suffix(".tmp")
        tmp.write_text(json.dumps(book))
        os.replace(tmp, self.book)

    def _install(self, instance: str, user_data: str, data_dir: Path) -> str:
        """What genesis.sh does before bootstrap: the wheel of the user data into a venv of the VM's."""
        url, sha256 = artifact_link(user_data)
        venv = data_dir / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
        site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
        (site / "test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        installer = data_dir / "install-oct.sh"
        installer.write_text(deploy_file("install-oct.sh"))
        done = subprocess.run(
            ["bash", str(installer), url, sha256, str(venv)],
            env={**self.env, "PIP_NO_INDEX": "1"},
            capture_output=True,
            text=True,
            timeout=180,
            cwd=data_dir,
        )
        (data_dir / "install.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(
                f"installing oct on {instance} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return str(venv / "bin" / "python")

    def _power_off(self, vm: Vm) -> None:
        """What terminating a VM does: the daemon and everything it ran stop at once, and its
        disks are no longer mounted anywhere."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(vm.process.pid, signal.SIGKILL)
        vm.process.wait(timeout=10)
        kill_process_instances(vm.data_dir, grace=1.0)
        stop_ingresses(vm.data_dir, grace=1.0)  # in its own session, like the services
        remove_containers(cluster=vm.cluster, node=vm.node)
        for mount in mounts_under(vm.data_dir.parent / f"{vm.data_dir.name}-volumes"):
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True, timeout=30)
        shutil.rmtree(self.disks / vm.node, ignore_errors=True)

    def running(self) -> dict[str, Vm]:
        return {i: vm for i, vm in self.vms.items() if vm.process.poll() is None}

    def logs(self) -> str:
        parts = []
        for vm in self.vms.values():
            with contextlib.suppress(OSError):
                text = (vm.data_dir / "oct-ctl.log").read_text(errors="replace")
                parts.append(f"--- {vm.instance} ({vm.node} on {vm.address})\n{text[-6000:]}")
        return "\n".join([*parts, f"hypervisor errors: {self.errors}"])


def mounts_under(folder: Path) -> list[Path]:
    """Mount points at or below ``folder`` (from /proc/self/mountinfo), deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].replace("\\040", " "))
        if point == folder or folder in point.parents:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)
