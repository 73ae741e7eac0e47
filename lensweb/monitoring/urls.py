from django.urls import include, path

from . import metrics, pages, views

dashboard_patterns = [
    path("", pages.dashboard, name="dashboard"),
    path("live/", pages.live, name="live"),  # the partial #monitoring-live polls
    path("lenses/", pages.lenses, name="lenses"),
]

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("monitoring/", include((dashboard_patterns, "monitoring"))),
]
