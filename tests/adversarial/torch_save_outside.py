"""Writes a file outside its worktree with torch.save: torch opens the file in C++, where no audit event
is raised, so the hook never sees it. Landlock refuses the open in the kernel. Target: $POISE_TEST_TARGET."""

import os

import torch

try:
    torch.save({"poison": 1}, os.environ["POISE_TEST_TARGET"])
    outcome = "written"
except RuntimeError as exc:  # torch reports the refused open as a RuntimeError
    outcome = f"refused ({exc})"
raise RuntimeError(f"torch.save outside: {outcome}")
