from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "portal.common"
    label = "common"

    def ready(self) -> None:
        from portal.common import mailbox  # noqa: F401 (registers its system check)
        from portal.common.api import use_utc_times

        use_utc_times()
