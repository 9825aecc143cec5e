"""Reserves 1 TiB of address space without access, as the CUDA driver does at start, then allocates
without bound: `python -m tests.adversarial.reserve_then_hoard`. Prints how far it got."""

import mmap

NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
reserved = mmap.mmap(-1, 1 << 40, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | NORESERVE, prot=mmap.PROT_NONE
                     if hasattr(mmap, "PROT_NONE") else 0)
print("reserved 1 TiB", flush=True)
hoard = []
while True:
    hoard.append(bytearray(64 * 1024 * 1024))  # the allocation that must fail
