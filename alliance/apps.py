from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AllianceConfig(AppConfig):
    name = "alliance"
    verbose_name = _("Alliance")

    def ready(self) -> None:
        from axes.signals import user_locked_out

        from alliance.signals import audit_login_lockout

        user_locked_out.connect(audit_login_lockout, dispatch_uid="alliance.audit_login_lockout")
