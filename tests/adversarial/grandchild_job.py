"""A trusted-looking job that leaves a hanging grandchild: `python -m tests.adversarial.grandchild_job`.

Started with the guard off (it must be able to spawn): it starts `sh`, which
starts `sleep` in the background and records both pids, then everyone hangs.
Only killing the whole process group ends them all.
"""

import subprocess
import sys

script = 'sleep 600 & echo $! > grandchild.pid; echo $$ > child.pid; wait'
subprocess.run(["sh", "-c", script], check=False)
sys.exit(0)
