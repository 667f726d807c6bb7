"""A user-info resource protected by DOT's bearer-token check: proves a vended token works."""

from django.http import HttpRequest, JsonResponse
from oauth2_provider.views.generic import ProtectedResourceView


class UserInfoView(ProtectedResourceView):  # type: ignore[misc]
    def get(self, request: HttpRequest) -> JsonResponse:
        user = request.resource_owner
        return JsonResponse({"sub": str(user.pk), "name": user.get_username(), "email": user.email})
