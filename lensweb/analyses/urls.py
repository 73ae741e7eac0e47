from django.urls import path

from . import views

app_name = "analyses"

urlpatterns = [
    path("", views.index, name="index"),
    path("analyses/", views.submit, name="submit"),
    path("analyses/<int:job_id>/card/", views.job_card, name="card"),
    path("analyses/<int:job_id>/cancel/", views.cancel, name="cancel"),
]
