"""Pretrained weights on a cluster: `famix sweep run` fetches a tag's weights once into the cache
(with progress) before anything is submitted, the stages load that file from disk, and an offline
machine gets one line saying which file to copy where.

open_clip's URL for RN50/openai is pointed at an HTTP server on 127.0.0.1 that the tests start;
no test reaches beyond loopback.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import threading
from pathlib import Path

import pytest
import torch

from famix_core.errors import WeightsError

pytestmark = pytest.mark.slow  # imports open_clip for its pretrained table


class _Server:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1 and counts the requests per path."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _point_rn50_openai_at(monkeypatch, url: str) -> None:
    import open_clip.pretrained as oc

    monkeypatch.setitem(oc._PRETRAINED["RN50"]["openai"], "url", url)
    monkeypatch.setitem(oc._PRETRAINED["RN50"]["openai"], "hf_hub", "")  # only the URL route


def _serialized(sd: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HOME and HF cache: nothing cached from earlier runs can answer."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return tmp_path / "home"


def test_fetch_downloads_once_checks_the_sha256_and_leaves_no_partial_file(tmp_path, monkeypatch, home):
    from famix_core.models.download import fetch_weights

    body = b"stand-in weights " * 100_000  # 1.7 MB: several chunks
    sha = hashlib.sha256(body).hexdigest()
    srv = _Server({f"/clip/{sha}/RN50.pt": body, f"/clip/{'0' * 64}/RN50.pt": body})
    try:
        _point_rn50_openai_at(monkeypatch, srv.url(f"/clip/{sha}/RN50.pt"))
        seen: list[tuple[int, int | None]] = []
        cache = tmp_path / "cache"
        path = fetch_weights("RN50", "openai", str(cache), progress=lambda d, t: seen.append((d, t)))
        assert path == cache / "RN50.pt" and path.read_bytes() == body
        assert seen[-1] == (len(body), len(body)) and len(seen) >= 2  # progress as it goes
        assert fetch_weights("RN50", "openai", str(cache)) == path
        assert srv.hits == {f"/clip/{sha}/RN50.pt": 1}  # once: the second call found the cache
        assert sorted(p.name for p in cache.iterdir()) == ["RN50.pt"]

        # a copy in the cache that is not the file its URL names (an interrupted download, a copy made by
        # hand, truncated) counts as absent, as open_clip has it: the plan says so, the download replaces it
        from famix_core.models.clip import locate_weights
        from famix_core.models.download import damaged_note

        assert locate_weights("RN50", "openai", str(cache)) == (str(path), None)
        path.write_bytes(body[:1000])
        assert locate_weights("RN50", "openai", str(cache)) == (None, "openai")  # to download: every stage failed on it
        assert damaged_note("RN50", "openai", str(cache)) == f" ({path} there is not the file its URL names: truncated or damaged)"
        assert fetch_weights("RN50", "openai", str(cache)) == path and path.read_bytes() == body
        assert srv.hits == {f"/clip/{sha}/RN50.pt": 2} and damaged_note("RN50", "openai", str(cache)) == ""
        path.chmod(0o000)
        if os.geteuid() != 0:  # root reads it anyway
            with pytest.raises(WeightsError, match=rf"^model.pretrained: cannot read {path} \(Permission denied\)$"):
                locate_weights("RN50", "openai", str(cache))
        path.chmod(0o644)

        # a file that does not match the sha256 in its URL is refused and nothing is kept
        _point_rn50_openai_at(monkeypatch, srv.url(f"/clip/{'0' * 64}/RN50.pt"))
        other = tmp_path / "other"
        with pytest.raises(WeightsError, match="sha256") as e:
            fetch_weights("RN50", "openai", str(other))
        assert len(str(e.value).splitlines()) == 1
        assert list(other.iterdir()) == []
    finally:
        srv.close()


def test_offline_machine_gets_one_line_naming_the_file_and_where_to_put_it(tmp_path, monkeypatch, home):
    from famix_core.models.download import fetch_weights

    with socket.socket() as s:  # a port where nothing listens (bound, so that nothing else takes it): refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        _point_rn50_openai_at(monkeypatch, f"http://127.0.0.1:{port}/clip/RN50.pt")
        with pytest.raises(WeightsError) as e:
            fetch_weights("RN50", "openai", str(tmp_path / "cache"))
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    assert "cannot download RN50 weights" in msg and "refused" in msg.lower()
    assert f"copy RN50.pt (from http://127.0.0.1:{port}/clip/RN50.pt) into {tmp_path / 'cache'}" in msg
    assert not any((tmp_path / "cache").iterdir())

    # a host that does not resolve (the usual offline case) says so; .invalid never resolves (RFC 6761)
    _point_rn50_openai_at(monkeypatch, "http://famix-weights.invalid/clip/RN50.pt")
    with pytest.raises(WeightsError, match="famix-weights.invalid does not resolve: this machine is offline") as e:
        fetch_weights("RN50", "openai", None)
    assert f"into {home / '.cache' / 'clip'} on a machine with internet" in str(e.value)  # open_clip's default cache

    # offline, with a damaged copy in the cache: the line says the copy there is not the file
    from famix_core.models.clip import locate_weights

    _point_rn50_openai_at(monkeypatch, f"http://famix-weights.invalid/clip/{'0' * 64}/RN50.pt")
    (tmp_path / "cache" / "RN50.pt").write_bytes(b"half a file")
    with pytest.raises(WeightsError) as e:
        locate_weights("RN50", "openai", str(tmp_path / "cache"))
    assert str(e.value).startswith(f"model.pretrained=openai: RN50 weights are not in {tmp_path / 'cache'} ({tmp_path / 'cache' / 'RN50.pt'} "
                                   "there is not the file its URL names: truncated or damaged) and famix-weights.invalid does not resolve")  # fmt: skip


def test_create_clip_loads_the_fetched_file_from_disk_without_the_network(tmp_path, monkeypatch, home):
    """famix-tiny stands in for RN50 (same open_clip architecture name, a tenth of the size): its
    registry entry gets the openai tag, the server serves a famix-tiny CLIP in OpenAI's key layout."""
    import dataclasses

    from famix_core.models import clip as clip_mod

    spec = clip_mod.BACKBONE_REGISTRY["famix-tiny"]
    monkeypatch.setitem(clip_mod.BACKBONE_REGISTRY, "famix-tiny", dataclasses.replace(spec, pretrained_tags=("openai",)))
    torch.manual_seed(3)
    reference = clip_mod.create_clip("famix-tiny", "none")
    served = {k: v.clone() for k, v in reference.state_dict().items()}
    served.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    body = _serialized(served)
    srv = _Server({"/clip/RN50.pt": body})
    try:
        _point_rn50_openai_at(monkeypatch, srv.url("/clip/RN50.pt"))
        cache = tmp_path / "shared-cache"
        from famix_core.models.download import fetch_weights

        fetch_weights("RN50", "openai", str(cache))
        srv.close()  # from here on, the network is gone (a compute node)
        import open_clip

        def no_download(*a, **k):
            raise AssertionError("open_clip was asked to download")

        monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_download)
        model = clip_mod.create_clip("famix-tiny", "openai", cache_dir=str(cache))
        got = model.state_dict()
        assert set(got) == set(reference.state_dict())
        assert all(torch.equal(got[k], reference.state_dict()[k]) for k in got)
    finally:
        srv.close()


CPU = ["train.device=cpu"]
"""The paper profile's ``auto`` without a CPU fallback is a plan-time error on a machine without a GPU
(the local backend runs the stages here): these tests are about the weights, on any machine."""


def test_sweep_run_downloads_missing_weights_once_every_input_is_checked(tmp_path, monkeypatch, home, capsys):
    """`famix sweep run --profile paper`: a missing data folder is said before any download begins
    (the weights were once fetched first, for a run that could not start); with the data there, the
    weights are fetched (with progress on stderr) before anything is submitted."""
    from orchestrator import driver
    from orchestrator.__main__ import main
    from tests.test_data import make_tree

    body = b"x" * 3_000_000
    srv = _Server({"/clip/RN50.pt": body})
    try:
        _point_rn50_openai_at(monkeypatch, srv.url("/clip/RN50.pt"))
        monkeypatch.chdir(tmp_path)
        Path("sweeps").mkdir()
        Path("sweeps/dev.yaml").write_text("name: dev\ngrid:\n  style.mix: [true]\ndomains: [C]\n")
        cache = tmp_path / "cache"
        args = ["sweep", "run", "dev", "--profile", "paper", "--run-dir", "out", "data.root=data", f"model.cache_dir={cache}", *CPU]
        assert main(args) == 2
        assert "data root not found" in capsys.readouterr().err
        assert srv.hits == {} and not cache.exists() and not Path("out").exists()

        make_tree(Path("data"), "gta5", "train", [f"{i:05d}" for i in range(2)])
        make_tree(Path("data"), "gta5", "val", [f"{i:05d}" for i in range(2, 4)])
        make_tree(Path("data"), "cityscapes", "val", ["c/c_1"])
        planned = []
        monkeypatch.setattr(driver, "run_plan", lambda plan, opts: planned.append(plan) or driver.SweepResult({}))
        main(args)
        err = capsys.readouterr().err
        assert len(planned) == 1, err  # every check passed: the run was handed the plan
        assert (cache / "RN50.pt").read_bytes() == body and srv.hits == {"/clip/RN50.pt": 1}
        assert f"weights: downloading RN50 openai into {cache}: 3.0/3.0 MB" in err
    finally:
        srv.close()


def test_sweep_plan_announces_missing_weights_and_downloads_nothing(tmp_path, monkeypatch, home, capsys):
    from orchestrator.__main__ import main

    srv = _Server({"/clip/RN50.pt": b"x" * 1000})
    try:
        _point_rn50_openai_at(monkeypatch, srv.url("/clip/RN50.pt"))
        monkeypatch.chdir(tmp_path)
        cache = tmp_path / "cache"
        main(["sweep", "plan", "ablation", "--profile", "paper", "--run-dir", "out", "data.root=missing-data", f"model.cache_dir={cache}", *CPU])
        err = capsys.readouterr().err
        assert f"weights: RN50 openai is not in {cache}: `famix sweep run` downloads it first" in err
        assert srv.hits == {} and not cache.exists()

        _point_rn50_openai_at(monkeypatch, "http://famix-weights.invalid/clip/RN50.pt")
        rc = main(["sweep", "plan", "ablation", "--profile", "paper", "--run-dir", "out", "data.root=missing-data", f"model.cache_dir={cache}", *CPU])
        lines = capsys.readouterr().err.strip().splitlines()  # the weights first, then each missing data root
        assert rc == 2 and lines[0] == f"famix: error: {len(lines) - 1} problems with the sweep's inputs (nothing was run):", lines
        assert "famix-weights.invalid does not resolve: this machine is offline; copy RN50.pt" in lines[1]
        assert all("missing-data" in line for line in lines[2:]) and len(lines) > 3
    finally:
        srv.close()


@pytest.mark.parametrize(
    "backbone, pretrained, expected",
    [
        ("RN50", "yfcc15m", "model.pretrained: unknown weights 'yfcc15m' for backbone RN50 (known: none, openai, <path"),
        ("RN50", "famix-synth", "model.pretrained: the packaged weights 'famix-synth' exist for famix-tiny, not for backbone RN50"),
        ("famix-tiny", "openai", "model.pretrained: unknown weights 'openai' for backbone famix-tiny (known: none, famix-synth, <path"),
        ("RN50", "{tmp}/missing.pt", "model.pretrained: weights file not found: {tmp}/missing.pt"),
        ("RN50", "{tmp}", "model.pretrained: {tmp} is a folder; expected a weights file in it (a CLIP or FAMix checkpoint)"),
        ("RN50", "openai", "model.pretrained=openai: RN50 weights are not in {tmp}/cache and famix-weights.invalid does not resolve"),
        # a file that is there but is no weights file: refused from its first bytes, before anything runs
        ("RN50", "{tmp}/garbage.pt", "model.pretrained: {tmp}/garbage.pt is not a torch file (torch.save or TorchScript"),
        ("RN50", "{tmp}/garbage.safetensors", "model.pretrained: {tmp}/garbage.safetensors is not a safetensors file"),
    ],
)
def test_a_sweep_refuses_weights_with_the_line_a_stage_would_print(tmp_path, monkeypatch, home, backbone, pretrained, expected):
    """The plan-time check looks for the weights the way the stages do (`locate_weights`): before a
    sweep submits anything, a mistake gets the line `famix train` would print, not a wording of its own
    (an unknown tag was once refused as a missing file named after the tag)."""
    from famix_core.config import FamixConfig
    from famix_core.models.clip import locate_weights
    from orchestrator.checks import check_weights

    _point_rn50_openai_at(monkeypatch, "http://famix-weights.invalid/clip/RN50.pt")
    pretrained, expected = pretrained.format(tmp=tmp_path), expected.format(tmp=tmp_path)
    if "garbage" in pretrained:
        Path(pretrained).write_text("not weights\n")
    cfg = FamixConfig.model_validate({"model": {"backbone": backbone, "pretrained": pretrained, "cache_dir": str(tmp_path / "cache")}})
    for fetch in (True, False):
        with pytest.raises(WeightsError) as sweep:
            check_weights(cfg, fetch=fetch)
        assert str(sweep.value).startswith(expected) and "\n" not in str(sweep.value)
    with pytest.raises(WeightsError) as stage:
        locate_weights(backbone, pretrained, str(tmp_path / "cache"))
    assert str(stage.value) == str(sweep.value)
    assert not (tmp_path / "cache").exists()  # refused before any download began


def test_a_mistyped_tag_in_a_sweep_is_unknown_weights_not_a_missing_file(tmp_path, monkeypatch, home, capsys):
    """The plan makes a weights *path* absolute (the stages run elsewhere), and only a path: a value
    that looks like none (no `/`, no weights suffix, no such file) stays a name, so the line names
    the weights the backbone knows."""
    from orchestrator.__main__ import main

    monkeypatch.chdir(tmp_path)
    args = ["sweep", "plan", "ablation", "--profile", "paper", "--run-dir", "out", "data.root=missing-data", *CPU]
    assert main([*args, "model.pretrained=yfcc15m"]) == 2
    weights = capsys.readouterr().err.strip().splitlines()[1]  # then the missing data roots
    assert weights == "  model.pretrained: unknown weights 'yfcc15m' for backbone RN50 (known: none, openai, <path to a CLIP or FAMix checkpoint>)"
    assert main([*args, "model.pretrained=w/RN50.pt"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[1] == f"  model.pretrained: weights file not found: {tmp_path / 'w' / 'RN50.pt'}"
