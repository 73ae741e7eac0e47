from django.contrib import admin
from django.urls import include, path

from lensweb import urlsafety  # noqa: F401  (registers the `id` path converter before any route is built)
from lensweb.accounts.ratelimits import login_throttled

# Django's own admin login, throttled like /accounts/login/ (the same counters). Set on the site, before
# its urls are built, rather than routed beside it: it stays `admin:login`, where the admin sends visitors.
admin.site.login = login_throttled(admin.site.login)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("lensweb.api.urls")),
    path("accounts/", include("lensweb.accounts.urls")),
    path("", include("lensweb.monitoring.urls")),
    path("", include("lensweb.results.urls")),  # before analyses: /analyses/<id>/ is the results permalink
    path("", include("lensweb.analyses.urls")),
]
