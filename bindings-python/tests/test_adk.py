"""The ADK integration: the tool function called plainly, the code executor on its own, and the
executor through a real ADK ``Runner`` and ``LlmAgent`` whose model is a scripted ``BaseLlm``
(no network). google-adk is installed by the test script; without it these tests fail loudly,
unless VANA_SANDBOX_NO_ADK=1 says google-adk cannot be installed on this host."""

import asyncio
import base64
import importlib
import os
import sys

import pytest

from vana_sandbox import BackendUnavailable, adk

NO_ADK = os.environ.get("VANA_SANDBOX_NO_ADK") == "1"
needs_adk = pytest.mark.skipif(NO_ADK, reason="google-adk cannot be installed on this host (VANA_SANDBOX_NO_ADK=1)")

CHART = "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [3, 5])\nplt.title('sales')\n"


def test_execute_code_tool_plain():
    async def main():
        r = await adk.execute_code("print(2 + 2)")
        assert r == {"status": "success", "stdout": "4\n", "stderr": "", "exit_code": 0, "files": []}, r
        r = await adk.execute_code("console.log('js')", language="javascript", timeout=5)
        assert r["stdout"] == "js\n"
        r = await adk.execute_code('package main\nimport "fmt"\nfunc main() { fmt.Println("go") }\n', language="go")
        assert r["stdout"] == "go\n", r
        r = await adk.execute_code("while True: pass", timeout=1)
        assert r["status"] == "timeout" and "status: timeout" in r["error"]
        r = await adk.execute_code("x", language="cobol")
        assert r["status"] == "rejected" and "unknown language" in r["error"]
        r = await adk.execute_code("1 / 0")
        assert r["status"] == "error" and "ZeroDivisionError" in r["error"] and "exit code: 1" in r["error"]
        # Without a tool context the charts are named, not saved.
        r = await adk.execute_code(CHART + "open('t.csv', 'w').write('a\\n')")
        assert r["files"] == ["figure_1.png", "t.csv"], r
        assert set(r) == {"status", "stdout", "stderr", "exit_code", "files"}

    asyncio.run(main())


def test_import_never_requires_google_adk(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.adk", None)
    monkeypatch.setitem(sys.modules, "google.adk.code_executors", None)
    mod = importlib.reload(adk)
    assert mod.HAVE_ADK is False
    assert asyncio.run(mod.execute_code("print(1)"))["stdout"] == "1\n"
    with pytest.raises(ImportError, match="google-adk"):
        mod.VanaCodeExecutor()
    monkeypatch.undo()
    importlib.reload(adk)


def test_adk_precondition():
    """google-adk must be importable unless the test script said it could not be installed."""
    if NO_ADK:
        pytest.skip("google-adk cannot be installed on this host (VANA_SANDBOX_NO_ADK=1)")
    import google.adk  # noqa: F401 - fails loudly when missing

    assert importlib.reload(adk).HAVE_ADK


@needs_adk
def test_executor_on_its_own(tmp_path):
    from google.adk.code_executors.code_execution_utils import CodeExecutionInput, File
    from google.adk.tools import FunctionTool

    importlib.reload(adk)
    with pytest.raises(BackendUnavailable):
        adk.VanaCodeExecutor(backend="nonsense")  # eager: fails at construction
    ex = adk.VanaCodeExecutor(stateful=True, timeout_seconds=2, outputs=["out/*.csv"], memory_mb=256)
    try:
        r = ex.execute_code(
            None,
            CodeExecutionInput(
                code="import csv\nrows = list(csv.reader(open('data/sales.csv')))\nraw = open('raw.bin', 'rb').read()\nlen(rows)",
                input_files=[
                    File(name="data/sales.csv", content=base64.b64encode(b"m,u\njan,3\n").decode(), mime_type="text/csv"),
                    File(name="raw.bin", content=b"\x00\x01"),
                ],
                execution_id="conversation-1",
            ),
        )
        assert (r.stdout, r.stderr, r.output_files) == ("2\n", "", []), r
        # State is kept for the same execution id, and not shared with another.
        r = ex.execute_code(None, CodeExecutionInput(code="import os\nos.makedirs('out', exist_ok=True)\nopen('out/r.csv', 'w').write('n\\n%d\\n' % len(rows))\nprint(raw)", execution_id="conversation-1"))
        assert r.stdout == "b'\\x00\\x01'\n" and r.stderr == ""
        assert [(f.name, f.content, f.mime_type) for f in r.output_files] == [("out/r.csv", b"n\n2\n", "text/csv")]
        other = ex.execute_code(None, CodeExecutionInput(code="rows", execution_id="conversation-2"))
        assert "NameError" in other.stderr and "status: error, exit code: 1" in other.stderr
        # A warning on stderr of a successful run is not a failure.
        r = ex.execute_code(None, CodeExecutionInput(code="import warnings\nwarnings.warn('careful')\nprint('ok')", execution_id="conversation-1"))
        assert (r.stdout, r.stderr) == ("ok\n", "")
        # timeout_seconds holds; a kernel that had to be restarted says so.
        r = ex.execute_code(None, CodeExecutionInput(code="import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", execution_id="conversation-1"))
        assert "status: timeout" in r.stderr and "kernel was restarted" in r.stderr, r.stderr
        if hasattr(r, "exit_code"):
            assert r.exit_code is None
        # Bad input files get a clear error, not a crash of the agent's turn.
        r = ex.execute_code(None, CodeExecutionInput(code="print(1)", input_files=[File(name="../escape.txt", content=b"x")], execution_id="conversation-1"))
        assert "PolicyRejected" in r.stderr and "escape.txt" in r.stderr, r.stderr
        # Stateless: charts come back from a fresh session each time.
        stateless = adk.VanaCodeExecutor()
        r = stateless.execute_code(None, CodeExecutionInput(code=CHART + "print('charted')"))
        assert (r.stdout, r.stderr) == ("charted\n", ""), r
        assert [(f.name, f.mime_type) for f in r.output_files] == [("figure_1.png", "image/png")]
        assert r.output_files[0].content[:8] == b"\x89PNG\r\n\x1a\n"
        stateless.close()
    finally:
        ex.close()

    tool = FunctionTool(adk.execute_code)
    assert tool.name == "execute_code"
    decl = str(tool._get_declaration())
    assert "code" in decl and "tool_context" not in decl


@needs_adk
@pytest.mark.parametrize("mode", ["local", "remote"])
def test_through_a_runner_and_an_llm_agent(mode, request):
    """``remote``: the executor runs the blocks on a ``vana-sandbox serve`` through a Client."""
    from google.adk.agents import LlmAgent
    from google.adk.artifacts import InMemoryArtifactService
    from google.adk.models.base_llm import BaseLlm
    from google.adk.models.llm_response import LlmResponse
    from google.adk.runners import Runner
    from google.adk.sessions import InMemorySessionService
    from google.genai import types

    importlib.reload(adk)

    seen = []
    turns = {
        "load": "```python\nimport math\nsales = {'jan': 3, 'feb': 5}\nopen('sales.txt', 'w').write(str(sum(sales.values())))\nprint('loaded', len(sales))\n```",
        "plot": "```python\nimport matplotlib.pyplot as plt\nplt.bar(list(sales), list(sales.values()))\nprint('total', open('sales.txt').read(), math.sqrt(16))\n```",
    }

    class ScriptedLlm(BaseLlm):
        """Answers a user message with its turn's code block, and a code result with text."""

        model: str = "scripted"

        async def generate_content_async(self, llm_request, stream=False):
            last = llm_request.contents[-1]
            text = "".join(p.text or "" for p in last.parts or [])
            seen.append(text)
            if last.role == "user" and text in turns:
                reply = turns[text]
            else:
                reply = "Done."
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=reply)]))

    if mode == "local":
        executor = adk.VanaCodeExecutor(stateful=True, timeout_seconds=20)
    else:
        from vana_sandbox import Client

        client = Client(request.getfixturevalue("unix_server"))
        with pytest.raises(TypeError, match="server decides"):
            adk.VanaCodeExecutor(client=client, memory_mb=256)
        executor = adk.VanaCodeExecutor(stateful=True, timeout_seconds=20, client=client)
    agent = LlmAgent(name="analyst", model=ScriptedLlm(), code_executor=executor, instruction="Analyse data with code.")
    artifacts = InMemoryArtifactService()
    sessions = InMemorySessionService()
    runner = Runner(app_name="vana", agent=agent, session_service=sessions, artifact_service=artifacts)

    async def turn(session_id, text):
        outputs, deltas = [], {}
        message = types.Content(role="user", parts=[types.Part(text=text)])
        async for event in runner.run_async(user_id="u", session_id=session_id, new_message=message):
            for part in (event.content.parts if event.content else None) or []:
                if part.code_execution_result is not None:
                    outputs.append(part.code_execution_result.output or "")
            deltas.update(event.actions.artifact_delta or {})
        return outputs, deltas

    async def main():
        session = await sessions.create_session(app_name="vana", user_id="u")
        out1, deltas1 = await turn(session.id, "load")
        assert any("loaded 2" in o for o in out1), out1
        assert deltas1 == {}
        out2, deltas2 = await turn(session.id, "plot")
        # Turn two used turn one's variables, import and file: the state persisted.
        assert any("total 8 4.0" in o for o in out2), out2
        assert list(deltas2) == ["figure_1.png"], deltas2
        keys = await artifacts.list_artifact_keys(app_name="vana", user_id="u", session_id=session.id)
        assert keys == ["figure_1.png"], keys
        part = await artifacts.load_artifact(app_name="vana", user_id="u", session_id=session.id, filename="figure_1.png")
        assert part.inline_data.mime_type == "image/png"
        assert part.inline_data.data[:8] == b"\x89PNG\r\n\x1a\n"

    try:
        asyncio.run(main())
    finally:
        executor.close()
    # The model saw the code's output fed back after each code block.
    assert any("loaded 2" in c for c in seen), seen


@needs_adk
def test_execute_code_tool_saves_artifacts_through_its_tool_context():
    from google.adk.agents import LlmAgent
    from google.adk.artifacts import InMemoryArtifactService
    from google.adk.models.base_llm import BaseLlm
    from google.adk.models.llm_response import LlmResponse
    from google.adk.runners import Runner
    from google.adk.sessions import InMemorySessionService
    from google.genai import types

    importlib.reload(adk)
    results = []

    class CallsTheTool(BaseLlm):
        model: str = "scripted-tool"

        async def generate_content_async(self, llm_request, stream=False):
            last = llm_request.contents[-1]
            responses = [p.function_response for p in last.parts or [] if p.function_response]
            if responses:
                results.append(responses[0].response)
                yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text="Charted.")]))
                return
            call = types.FunctionCall(name="execute_code", args={"code": CHART + "print('ran')"})
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(function_call=call)]))

    agent = LlmAgent(name="tooled", model=CallsTheTool(), tools=[adk.execute_code])
    artifacts = InMemoryArtifactService()
    sessions = InMemorySessionService()
    runner = Runner(app_name="vana", agent=agent, session_service=sessions, artifact_service=artifacts)

    async def main():
        session = await sessions.create_session(app_name="vana", user_id="u")
        message = types.Content(role="user", parts=[types.Part(text="chart it")])
        async for _ in runner.run_async(user_id="u", session_id=session.id, new_message=message):
            pass
        keys = await artifacts.list_artifact_keys(app_name="vana", user_id="u", session_id=session.id)
        assert keys == ["figure_1.png"], keys

    asyncio.run(main())
    assert results and results[0]["stdout"] == "ran\n" and results[0]["files"] == ["figure_1.png"], results
    assert "id" not in results[0] and "session" not in results[0]
