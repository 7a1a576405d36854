"""Give the "Support agents" group what agents need for tickets, usage pages and help articles.

Which rows an agent sees is filtered in code (backend/agents/access.py): their sites' only.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Support agents"
PERMISSIONS = [
    ("tickets", "view_ticket"),
    ("tickets", "change_ticket"),  # the admin's "retry" actions
    ("tickets", "view_callbackattempt"),  # the ticket page lists its callback attempts
    ("quotas", "view_usagerecord"),  # the usage ledger and each site's usage page
    ("kb", "view_article"),
    ("kb", "add_article"),
    ("kb", "change_article"),
    ("kb", "delete_article"),
    ("kb", "view_knowledgesettings"),  # read-only: embeddings settings hold a provider key
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


def remove_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name=GROUP).first()
    if group is None:
        return
    for app_label, codename in PERMISSIONS:
        group.permissions.remove(*Permission.objects.filter(content_type__app_label=app_label, codename=codename))


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0002_support_agents_group"),
        ("tickets", "0001_initial"),
        ("quotas", "0001_initial"),
        ("kb", "0002_fulltext"),
    ]

    operations = [migrations.RunPython(create_group, remove_permissions)]
