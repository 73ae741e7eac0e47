from django.contrib.auth import views as auth_views
from django.urls import path

from . import views
from .ratelimits import login_throttled

# Per client IP and per username, POSTs only (the admin's login shares the counters: lensweb/urls.py).
login_view = login_throttled(views.LoginView.as_view(redirect_authenticated_user=True))

urlpatterns = [
    path("login/", login_view, name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
    path("settings/", views.settings_page, name="account-settings"),
    path("settings/keys/", views.create_api_key, name="api-key-create"),
    path("settings/keys/<id:key_id>/revoke/", views.revoke_api_key, name="api-key-revoke"),
    path("password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
]
