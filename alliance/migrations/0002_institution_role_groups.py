"""Put every active person in their institution-role group (``institution:<id>:<role>``)."""

from django.db import migrations


def forwards(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Membership = apps.get_model("alliance", "Membership")
    for membership in Membership.objects.select_related("user"):
        if not membership.user.is_active:
            continue
        name = f"institution:{membership.institution_id}:{membership.role}"
        group, _created = Group.objects.get_or_create(name=name)
        membership.user.groups.add(group)


def backwards(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name__startswith="institution:").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("alliance", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
