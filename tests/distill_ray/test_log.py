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


def test_the_quiet_worker_hook_raises_rays_noisy_loggers_and_ray_can_import_it_by_name():
    import importlib

    from distill_ray.log import QUIET_RAY_LOGGERS, QUIET_WORKER_HOOK, quiet_ray_worker

    module, _, name = QUIET_WORKER_HOOK.rpartition(".")
    assert getattr(importlib.import_module(module), name) is quiet_ray_worker  # the string Ray imports in a worker
    cleaner = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
    assert cleaner in QUIET_RAY_LOGGERS
    before = {n: logging.getLogger(n).level for n in QUIET_RAY_LOGGERS}
    try:
        logging.getLogger(cleaner).setLevel(logging.INFO)  # as a worker's logging may leave it
        assert logging.getLogger(cleaner).isEnabledFor(logging.WARNING)
        quiet_ray_worker()
        assert not logging.getLogger(cleaner).isEnabledFor(logging.WARNING)
        assert logging.getLogger(cleaner).isEnabledFor(logging.ERROR)
    finally:
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)


def test_the_cleaner_logger_name_is_the_one_ray_train_warns_on():
    # Pinned to Ray's module: a rename would silently bring the warnings back.
    from ray.train.v2._internal.execution.controller import placement_group_cleaner

    from distill_ray.log import QUIET_RAY_LOGGERS

    assert placement_group_cleaner.logger.name in QUIET_RAY_LOGGERS
