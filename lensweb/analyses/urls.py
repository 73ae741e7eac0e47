from django.urls import path

from . import describe_page, views

app_name = "analyses"

urlpatterns = [
    path("", views.index, name="index"),
    path("analyses/", views.submit, name="submit"),
    path("analyses/<id:job_id>/card/", views.job_card, name="card"),
    path("analyses/<id:job_id>/cancel/", views.cancel, name="cancel"),
    path("describe/", describe_page.describe, name="describe"),
    path("describe/<id:probe_id>/", describe_page.described, name="described"),
    path("generations/", views.generate, name="generate"),
    path("generations/<id:generation_id>/", views.generation_page, name="generation"),
    path("generations/<id:generation_id>/card/", views.generation_card, name="generation_card"),
    path("generations/<id:generation_id>/cancel/", views.generation_cancel, name="generation_cancel"),
    path("generations/<id:generation_id>/analyse/", views.generation_analyse, name="generation_analyse"),
    path("generations/<id:generation_id>/input/", views.generation_input, name="generation_input"),
]
