"""Reading the memory limit from fake cgroup v1 and v2 trees."""

from __future__ import annotations

from pathlib import Path

from coinfeed.observability.process import memory_limit_bytes, own_cgroup_paths

V1_NO_LIMIT = "9223372036854771712"


def tree(root: Path, files: dict[str, str], proc_cgroup: str = "0::/\n") -> tuple[Path, Path]:
    """Write ``files`` (path relative to the cgroup root -> content) and a /proc/self/cgroup."""
    for relative, content in files.items():
        path = root / "cgroup" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (root / "cgroup").mkdir(exist_ok=True)
    proc = root / "proc_self_cgroup"
    proc.write_text(proc_cgroup)
    return root / "cgroup", proc


def test_v2_number_is_the_limit(tmp_path: Path) -> None:
    assert memory_limit_bytes(*tree(tmp_path, {"memory.max": "268435456\n"})) == 268435456


def test_v2_max_is_no_limit(tmp_path: Path) -> None:
    assert memory_limit_bytes(*tree(tmp_path, {"memory.max": "max\n"})) is None


def test_v2_smallest_limit_from_own_cgroup_up_to_the_root(tmp_path: Path) -> None:
    files = {
        "kubepods/memory.max": "536870912\n",
        "kubepods/pod1/memory.max": "max\n",
        "kubepods/pod1/app/memory.max": "1073741824\n",
    }
    root, proc = tree(tmp_path, files, "0::/kubepods/pod1/app\n")
    assert memory_limit_bytes(root, proc) == 536870912


def test_v1_number_is_the_limit(tmp_path: Path) -> None:
    root, proc = tree(
        tmp_path, {"memory/memory.limit_in_bytes": "134217728\n"}, "4:memory:/\n0::/\n"
    )
    assert memory_limit_bytes(root, proc) == 134217728


def test_v1_unlimited_value_is_no_limit(tmp_path: Path) -> None:
    root, proc = tree(tmp_path, {"memory/memory.limit_in_bytes": V1_NO_LIMIT}, "4:memory:/\n")
    assert memory_limit_bytes(root, proc) is None


def test_v1_own_cgroup_below_an_unlimited_root(tmp_path: Path) -> None:
    files = {
        "memory/memory.limit_in_bytes": V1_NO_LIMIT,
        "memory/docker/abc/memory.limit_in_bytes": "209715200",
    }
    root, proc = tree(tmp_path, files, "5:cpuacct,cpu:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    assert own_cgroup_paths(proc) == {"memory": "/docker/abc", "v2": "/"}
    assert memory_limit_bytes(root, proc) == 209715200


def test_v2_wins_over_v1_when_both_have_files(tmp_path: Path) -> None:
    files = {"memory.max": "100000000", "memory/memory.limit_in_bytes": "200000000"}
    assert memory_limit_bytes(*tree(tmp_path, files, "4:memory:/\n0::/\n")) == 100000000


def test_missing_files_mean_no_limit(tmp_path: Path) -> None:
    assert memory_limit_bytes(*tree(tmp_path, {})) is None
    assert memory_limit_bytes(tmp_path / "nothing", tmp_path / "no_proc_file") is None


def test_unreadable_content_is_ignored(tmp_path: Path) -> None:
    assert memory_limit_bytes(*tree(tmp_path, {"memory.max": "garbage"})) is None


def test_a_path_escaping_the_mount_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("1000")
    root, proc = tree(tmp_path, {}, "0::/..\n")
    assert memory_limit_bytes(root, proc) is None
