"""The project's urlconf plus one view nobody put in the access matrix (test_access_matrix must notice)."""

from django.http import HttpResponse
from django.urls import path

from lensweb.urls import urlpatterns as project_urlpatterns

urlpatterns = [*project_urlpatterns, path("new/", lambda request: HttpResponse("new"), name="new-view")]
