"""A Google ADK agent whose code runs in vana-sandbox: two turns in one conversation, the second
using what the first loaded (stateful=True), and a chart saved as an artifact.

    pip install google-adk
    python bindings-python/examples/adk_agent.py    (as root, like the native backend)

With GOOGLE_API_KEY set the agent uses Gemini; without it, a scripted stand-in model plays the
model's part (it answers with the code blocks below), so the example runs offline.
"""

import asyncio
import os

from google.adk.agents import LlmAgent
from google.adk.artifacts import InMemoryArtifactService
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
from google.genai import types

from vana_sandbox.adk import VanaCodeExecutor

SCRIPT = {
    "Load the sales figures.": "```python\nsales = {'jan': 3, 'feb': 5, 'mar': 8}\nprint('loaded', len(sales), 'months')\n```",
    "Chart them.": "```python\nimport matplotlib.pyplot as plt\nplt.bar(list(sales), list(sales.values()))\nprint('total', sum(sales.values()))\n```",
}


class ScriptedModel(BaseLlm):
    """Stands in for Gemini offline: a code block for each user message, then a summary."""

    model: str = "scripted"

    async def generate_content_async(self, llm_request, stream=False):
        last = llm_request.contents[-1]
        text = "".join(p.text or "" for p in last.parts or [])
        reply = SCRIPT.get(text, "Done.") if last.role == "user" else "Done."
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=reply)]))


async def main() -> None:
    executor = VanaCodeExecutor(stateful=True, timeout_seconds=30, memory_mb=512)
    model = "gemini-2.0-flash" if os.environ.get("GOOGLE_API_KEY") else ScriptedModel()
    agent = LlmAgent(name="analyst", model=model, code_executor=executor, instruction="Answer with Python code.")
    artifacts, sessions = InMemoryArtifactService(), InMemorySessionService()
    runner = Runner(app_name="demo", agent=agent, session_service=sessions, artifact_service=artifacts)
    session = await sessions.create_session(app_name="demo", user_id="me")
    for text in SCRIPT:
        message = types.Content(role="user", parts=[types.Part(text=text)])
        async for event in runner.run_async(user_id="me", session_id=session.id, new_message=message):
            for part in (event.content.parts if event.content else None) or []:
                if part.code_execution_result:
                    print("sandbox:", part.code_execution_result.output.strip())
    keys = await artifacts.list_artifact_keys(app_name="demo", user_id="me", session_id=session.id)
    print("artifacts:", keys)
    executor.close()


asyncio.run(main())
