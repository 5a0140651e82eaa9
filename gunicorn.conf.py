"""gunicorn settings for production: `make serve`, or `gunicorn -c gunicorn.conf.py`.

One gevent worker serves thousands of idle room screens and viewers, a greenlet each
(docs/deployment.md). gevent cannot share a process with aiortc's loop, so such a process
reaches live video through media nodes (`python -m video.node`, YUANJIAO_MEDIA_NODES) or
runs with YUANJIAO_MEDIA=off. More processes share rooms through REDIS_URL.
"""

import os

wsgi_app = "app:create_app()"
bind = os.environ.get("YUANJIAO_BIND", "0.0.0.0:5000")
workers = int(os.environ.get("YUANJIAO_WORKERS", "1"))
worker_class = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
worker_connections = int(os.environ.get("YUANJIAO_WORKER_CONNECTIONS", "5000"))
# A websocket lives for hours; gunicorn's timeout is about the worker's heartbeat only.
timeout = 60
graceful_timeout = 20


def post_worker_init(worker) -> None:
    """The app is loaded: keep its startup objects out of the collector's way, unmask
    websocket frames in C, and start its daily jobs."""
    from app import start_jobs
    from core.gctune import tune_gc
    from core.wsframes import speed_up_gevent_websocket

    speed_up_gevent_websocket()
    tune_gc()
    start_jobs(worker.wsgi)
