from os import PathLike
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

__version__: str

class SandboxError(Exception): ...
class PolicyRejected(SandboxError): ...
class BackendUnavailable(SandboxError): ...

_Files = Union[Mapping[str, Union[str, bytes]], Sequence[Mapping[str, str]], None]

class Execution:
    def __init__(self, data: Dict[str, Any]) -> None: ...
    @property
    def status(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...
    @property
    def error(self) -> Optional[str]: ...
    @property
    def exit_code(self) -> Optional[int]: ...
    @property
    def signal(self) -> Optional[int]: ...
    @property
    def execution_time(self) -> float: ...
    @property
    def resource_usage(self) -> Dict[str, Any]: ...
    @property
    def compile(self) -> Optional[Dict[str, Any]]: ...
    @property
    def security_events(self) -> List[Dict[str, Any]]: ...
    @property
    def id(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def backend(self) -> str: ...
    def to_dict(self) -> Dict[str, Any]: ...

class Policy:
    def __init__(self, **kwargs: Any) -> None: ...
    @classmethod
    def from_file(cls, path: Union[str, PathLike[str]]) -> Policy: ...
    def to_dict(self) -> Dict[str, Any]: ...

class Sandbox:
    def __init__(
        self,
        backend: str = ...,
        policy: Optional[Policy] = ...,
        max_concurrency: Optional[int] = ...,
        runtime: Optional[str] = ...,
        pool_size: int = ...,
        *,
        memory_mb: Optional[int] = ...,
        cpus: Optional[float] = ...,
        disk_mb: Optional[int] = ...,
        max_processes: Optional[int] = ...,
        max_output_bytes: Optional[int] = ...,
        cpu_time_secs: Optional[float] = ...,
    ) -> None: ...
    @property
    def backend(self) -> str: ...
    def capabilities(self) -> Dict[str, Any]: ...
    def run_code(
        self,
        code: str,
        language: str = ...,
        timeout: Optional[float] = ...,
        inputs: Optional[Sequence[str]] = ...,
        files: _Files = ...,
        env: Optional[Mapping[str, str]] = ...,
        network: Optional[Union[bool, Sequence[str]]] = ...,
        args: Optional[Sequence[str]] = ...,
        stdin: Optional[str] = ...,
    ) -> Execution: ...
    def close(self) -> None: ...
    def __enter__(self) -> Sandbox: ...
    def __exit__(self, *exc: Any) -> None: ...

class AsyncSandbox:
    def __init__(
        self,
        backend: str = ...,
        policy: Optional[Policy] = ...,
        max_concurrency: Optional[int] = ...,
        runtime: Optional[str] = ...,
        pool_size: int = ...,
        *,
        memory_mb: Optional[int] = ...,
        cpus: Optional[float] = ...,
        disk_mb: Optional[int] = ...,
        max_processes: Optional[int] = ...,
        max_output_bytes: Optional[int] = ...,
        cpu_time_secs: Optional[float] = ...,
    ) -> None: ...
    @property
    def backend(self) -> str: ...
    async def run_code(
        self,
        code: str,
        language: str = ...,
        *,
        timeout: Optional[float] = ...,
        inputs: Optional[Sequence[str]] = ...,
        files: _Files = ...,
        env: Optional[Mapping[str, str]] = ...,
        network: Optional[Union[bool, Sequence[str]]] = ...,
        args: Optional[Sequence[str]] = ...,
        stdin: Optional[str] = ...,
    ) -> Execution: ...
    async def close(self) -> None: ...
    async def __aenter__(self) -> AsyncSandbox: ...
    async def __aexit__(self, *exc: Any) -> None: ...
