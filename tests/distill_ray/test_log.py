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


def test_the_quiet_logger_names_are_the_ones_ray_train_logs_on():
    # Pinned to Ray's modules: a rename would silently bring the lines back.
    from ray.train.torch import config
    from ray.train.v2._internal.execution.controller import placement_group_cleaner
    from ray.train.v2._internal.execution.scaling_policy import scaling_policy
    from ray.train.v2._internal.execution.worker_group import worker_group
    from ray.train.v2.torch import train_loop_utils

    from httpx import _client as reward_client_transport  # grpo's reward calls
    from httpx2 import _client as openai_client_transport  # the openai client's (opd's teacher calls)

    from distill_ray.log import QUIET_RAY_LOGGERS

    modules = (placement_group_cleaner, scaling_policy, worker_group, config, train_loop_utils,
               reward_client_transport, openai_client_transport)  # fmt: skip
    assert sorted(m.logger.name for m in modules) == sorted(QUIET_RAY_LOGGERS)


def test_the_queue_length_warning_is_the_one_serves_request_router_logs():
    # Pinned to Ray's source, as above: the message the quiet hook drops, on the logger it filters.
    import inspect

    from ray.serve._private.request_router import request_router

    from distill_ray.log import QUIET_RAY_MESSAGES

    prefix = next(p for p in QUIET_RAY_MESSAGES[request_router.logger.name] if p.startswith("Failed to get queue"))
    assert f'f"{prefix}{{replica.replica_id}} "' in inspect.getsource(request_router)


def test_the_quiet_worker_hook_drops_serves_router_notices_and_nothing_else():
    from distill_ray.log import DropMessages, quiet_ray_worker

    class Collect(logging.Handler):  # on the logger itself: Ray may have turned its propagation off
        def emit(self, record):
            seen.append(record.getMessage())

    seen: list[str] = []
    serve_logger = logging.getLogger("ray.serve")
    before, level, handler = list(serve_logger.filters), serve_logger.level, Collect()
    serve_logger.filters[:] = [f for f in before if not isinstance(f, DropMessages)]  # an earlier hook call's
    serve_logger.addHandler(handler)
    serve_logger.setLevel(logging.INFO)
    try:
        quiet_ray_worker()
        quiet_ray_worker()  # idempotent: one filter
        assert sum(isinstance(f, DropMessages) for f in serve_logger.filters) == 1
        serve_logger.info("Started %s.", "<ray.serve._private.router.SharedRouterLongPollClient object at 0x7f>")
        serve_logger.warning("Failed to get queue length from Replica(id='p997ny7h', deployment='TeacherRouter', "
                             "app='teacher-generate') within 0.1s. If this happens repeatedly ...")
        serve_logger.info("Deployment 'teacher' is ready.")
        serve_logger.warning("Failed to fetch queue length for Replica(id='p997ny7h'): 'ActorDiedError'")
        assert seen == ["Deployment 'teacher' is ready.", "Failed to fetch queue length for Replica(id='p997ny7h'): "
                        "'ActorDiedError'"]  # fmt: skip
    finally:
        serve_logger.filters[:] = before
        serve_logger.removeHandler(handler)
        serve_logger.setLevel(level)


def test_the_router_notice_is_the_one_serve_logs():
    # Pinned to Ray's source: a reworded message would silently come back to the console.
    import inspect

    from ray.serve._private import router

    from distill_ray.log import QUIET_RAY_MESSAGES

    assert router.logger.name in QUIET_RAY_MESSAGES
    assert 'logger.info(f"Started {shared}.")' in inspect.getsource(router.SharedRouterLongPollClient.get_or_create)
    assert router.SharedRouterLongPollClient.__module__ + "." + router.SharedRouterLongPollClient.__name__ == \
        QUIET_RAY_MESSAGES["ray.serve"][0].removeprefix("Started <")


def test_the_quiet_levels_survive_ray_trains_own_logging_setup():
    """Ray Train's controller and workers call dictConfig on `ray.train` after the hook ran; that resets the levels
    of the child loggers (the setup lines came back on the console) but keeps their filters."""
    import logging.config

    from distill_ray.log import quiet_ray_worker

    name = "ray.train.v2._internal.execution.worker_group.worker_group"
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger, handler = logging.getLogger(name), Collect()
    before = list(logger.filters)
    try:
        quiet_ray_worker()
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "loggers": {"ray.train": {"level": "DEBUG"}}})  # as Ray Train's LoggingManager
        assert logger.level == logging.NOTSET  # the level is gone ...
        logger.addHandler(handler)
        logger.info("Started training worker group of size 2")
        logger.warning("a worker group warning")
        assert seen == ["a worker group warning"]  # ... the filter is not
    finally:
        logger.removeHandler(handler)
        logger.filters[:] = before


def test_the_quiet_driver_drops_rays_token_auth_notice_and_keeps_its_other_warnings():
    # Pinned to Ray's source: the logger that warns and the notice's wording.
    import inspect

    from ray._private.authentication import authentication_token_setup as auth

    from distill_ray.log import QUIET_DRIVER_MESSAGES, DropMessages, quiet_ray_driver

    (prefix,) = QUIET_DRIVER_MESSAGES[auth.logger.name]
    assert f'"{prefix} cluster. Set "' in inspect.getsource(auth._warn_token_auth_enabled)
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    before, handler = list(auth.logger.filters), Collect()
    auth.logger.addHandler(handler)
    try:
        quiet_ray_driver()
        quiet_ray_driver()  # idempotent: one filter
        assert sum(isinstance(f, DropMessages) for f in auth.logger.filters) == 1
        auth._warn_token_auth_enabled()
        auth._warn_token_auth_disabled()  # authentication off is worth a warning: it still shows
        assert len(seen) == 1 and seen[0].startswith("Token authentication is disabled")
    finally:
        auth.logger.filters[:] = before
        auth.logger.removeHandler(handler)
