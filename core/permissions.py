"""Permission names shared across the apps, as strings (no app on a lower floor imports the app that defines them).

Its own module so that what only needs a name (the admin) does not import the API stack of ``core.api``.
"""

READ_API = "monitoring.read_api"


def changes_need(*permissions: str, channel: str = "dashboard"):
    """A view decorator for a page that changes state: a signed-in user who lacks one of ``permissions`` gets a 403
    (as with Django's ``permission_required``), and a refused POST (the change itself, not a look at its confirmation
    page) is audited with who asked."""
    from functools import wraps

    from django.core.exceptions import PermissionDenied

    def decorate(view):
        @wraps(view)
        def checked(request, *args, **kwargs):
            missing = [p for p in permissions if not request.user.has_perm(p)]
            if missing:
                if request.method == "POST" and request.user.is_authenticated:
                    from core.audit import audit_record

                    audit_record(action="refused", channel=channel, actor=request.user,
                                 summary=f"POST {request.path} refused: {request.user.get_username()} lacks the "
                                         f"permission {', '.join(missing)}",
                                 details={"method": request.method, "path": request.path})
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return checked

    return decorate
