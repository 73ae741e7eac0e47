from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("lensweb.api.urls")),
    path("accounts/", include("lensweb.accounts.urls")),
    path("", include("lensweb.monitoring.urls")),
    path("", include("lensweb.results.urls")),  # before analyses: /analyses/<id>/ is the results permalink
    path("", include("lensweb.analyses.urls")),
]
