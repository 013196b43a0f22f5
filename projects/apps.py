from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ProjectsConfig(AppConfig):
    name = "projects"
    verbose_name = _("Projects")

    def ready(self) -> None:
        from alliance.signals import institution_status_changed
        from projects import audit_display
        from projects.receivers import problems_follow_institution_status

        audit_display.register()

        institution_status_changed.connect(
            problems_follow_institution_status, dispatch_uid="projects.institution_status"
        )
