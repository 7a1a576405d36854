"""Create the "Support agents" group with what agents need in the admin (site filtering is done in code)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Support agents"
PERMISSIONS = [
    ("chat", "view_conversation"),
    ("chat", "change_conversation"),
    ("chat", "view_visitor"),
    ("chat", "delete_visitor"),
    ("chat", "view_message"),
]


def create_group(apps, schema_editor):
    # Permissions are normally created after all migrations ran; make sure they exist now.
    for app_config in apps.get_app_configs():
        stub = getattr(app_config, "models_module", None) is None  # migration states carry stubs
        if stub:
            app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        if stub:
            app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for app_label, codename in PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
        ("chat", "0003_conversation_assigned_agent_and_more"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
