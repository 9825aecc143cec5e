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


class ModelNotFoundError(PoiseError):
    """A model file (GGUF, HF directory) is missing."""


class EngineLockedError(PoiseError):
    """Another live engine owns this run."""
