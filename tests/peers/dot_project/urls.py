from django.urls import include, path

from dot_project.views import UserInfoView

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("api/userinfo/", UserInfoView.as_view()),
]
