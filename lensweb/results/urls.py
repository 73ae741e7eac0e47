from django.urls import path

from . import views

app_name = "results"

urlpatterns = [
    path("analyses/history/", views.history, name="history"),
    path("analyses/compare/", views.compare, name="compare"),
    path("analyses/compare/difference/", views.explain_difference, name="explain_difference"),
    path("analyses/differences/<id:probe_id>/", views.difference, name="difference"),
    path("analyses/import/", views.import_file, name="import"),
    path("analyses/<id:analysis_id>/", views.detail, name="detail"),
    path("analyses/<id:analysis_id>/export.json", views.export_json, name="export_json"),
    path("analyses/<id:analysis_id>/export.csv", views.export_csv, name="export_csv"),
    path(
        "analyses/<id:analysis_id>/fulltext.html",
        views.fulltext_figure,
        {"fmt": "html"},
        name="fulltext_figure",
    ),
    path(
        "analyses/<id:analysis_id>/fulltext.svg", views.fulltext_figure, {"fmt": "svg"}, name="fulltext_svg"
    ),
    path(
        "analyses/<id:analysis_id>/export.research.json",
        views.export_research_json,
        name="export_research_json",
    ),
    path(
        "generations/<id:generation_id>/export.json",
        views.generation_export_json,
        name="generation_export_json",
    ),
    path(
        "generations/<id:generation_id>/export.csv",
        views.generation_export_csv,
        name="generation_export_csv",
    ),
    path("generations/<id:generation_id>/delete/", views.delete_generation, name="delete_generation"),
    path("analyses/<id:analysis_id>/candidates/<id:position>/", views.candidates, name="candidates"),
    path("analyses/<id:analysis_id>/scores/<id:position>/", views.scores, name="scores"),
    path("analyses/<id:analysis_id>/share/", views.share, name="share"),
    path("analyses/<id:analysis_id>/positions/", views.add_positions, name="add_positions"),
    path("analyses/<id:analysis_id>/delete/", views.delete, name="delete"),
    path("results/preferences/", views.preferences, name="preferences"),
    path("results/colours.css", views.colours_css, name="colours_css"),
    path("s/<str:token>/", views.shared, name="shared"),
    path("s/<str:token>/candidates/<id:position>/", views.shared_candidates, name="shared_candidates"),
    path("s/<str:token>/export.json", views.shared_export_json, name="shared_export_json"),
    path("s/<str:token>/export.csv", views.shared_export_csv, name="shared_export_csv"),
    path(
        "s/<str:token>/fulltext.html",
        views.shared_fulltext_figure,
        {"fmt": "html"},
        name="shared_fulltext_figure",
    ),
    path(
        "s/<str:token>/fulltext.svg", views.shared_fulltext_figure, {"fmt": "svg"}, name="shared_fulltext_svg"
    ),
    path(
        "s/<str:token>/export.research.json",
        views.shared_export_research_json,
        name="shared_export_research_json",
    ),
]
