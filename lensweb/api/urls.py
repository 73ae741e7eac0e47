from django.urls import path, re_path

from . import views

app_name = "api"

urlpatterns = [
    path("analyses", views.analyses_collection, name="analyses"),
    path("analyses/<int:analysis_id>", views.analysis_detail, name="analysis"),
    path("lenses", views.lenses, name="lenses"),
    path("generations", views.generations_collection, name="generations"),
    path("generations/<int:generation_id>", views.generation_detail, name="generation"),
    path("openapi.json", views.openapi_document, name="openapi"),
    # Last: anything else under /api/v1/ is a JSON 404, not the site's HTML page.
    re_path(r"^(?P<rest>.*)$", views.unknown_route, name="unknown"),
]
