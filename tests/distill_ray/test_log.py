"""Console messages: our packages log `[distill-ray] ...` at INFO to the current stderr; other libraries do not."""

from __future__ import annotations

import logging

from distill_ray.log import configure_logging


def test_our_messages_reach_stderr_once_and_others_stay_quiet(capsys):
    configure_logging()
    configure_logging()  # idempotent: still one line per message
    logging.getLogger("jobs.runner").info("stage 'x' done")
    logging.getLogger("httpx").info("HTTP Request: POST ...")
    logging.getLogger("distill_ray.data.part_store").debug("not at INFO")
    err = capsys.readouterr().err
    assert err == "[distill-ray] stage 'x' done\n"
