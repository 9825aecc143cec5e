"""One error hierarchy for the engine: every message says what went wrong and what to do."""

from __future__ import annotations


class PoiseError(Exception):
    """Base of every error that core/ raises on purpose."""


class ConfigError(PoiseError):
    """run.toml (or a config dict) is invalid; the message names the file and the key."""


class RunDirError(PoiseError):
    """A path is missing or is not a poise run directory."""


class ArchiveError(PoiseError):
    """The archive cannot be read or written."""


class CorruptArchiveError(ArchiveError):
    """archive.json is not valid; it is never overwritten."""


class UnknownCandidateError(ArchiveError):
    """No candidate with that id."""


class WorkspaceError(PoiseError):
    """The run's git repository is in a state we refuse to touch."""


class DirtyWorkspaceError(WorkspaceError):
    """The repository has uncommitted changes."""


class FrozenFileError(WorkspaceError):
    """A file outside algorithm.py changed; evaluation would not be comparable."""


class ContractError(PoiseError):
    """A RolloutBatch or a candidate module breaks the algorithm contract."""


class MechanismError(PoiseError):
    """Unknown or conflicting mechanism in the registry."""


class SandboxError(PoiseError):
    """The sandbox could not start a job (not: the job failed; that is an outcome)."""


class LLMError(PoiseError):
    """The language model backend failed or returned unusable output."""


class LLMUnavailableError(LLMError):
    """The backend cannot be reached or loaded at all. No verdict on any proposal: the engine stops and says
    so, instead of recording a rejected candidate per call (a server that is down would burn the budget)."""


class LLMCancelled(Exception):
    """A stop request ended an LLM call in flight. Deliberately not a PoiseError: the operators turn
    PoiseErrors into rejections, and a stopped call is no verdict on a proposal; it propagates to the
    engine, which stops, and the interrupted stage is redone on resume (as after kill -9)."""

    def __init__(self, message: str, completion_tokens: int = 0) -> None:
        super().__init__(message)
        self.completion_tokens = completion_tokens  # generated before the stop took effect


class ModelNotFoundError(PoiseError):
    """A model file (GGUF, HF directory) is missing."""


class ResourceNotFoundError(PoiseError):
    """A file that ships with poise (seed template, prompt template) is in neither the package nor the checkout."""


class EngineLockedError(PoiseError):
    """Another live engine owns this run."""


class CorruptResourceError(PoiseError):
    """A file that ships with poise is there but damaged (its checksum does not match); reinstall."""
