from django.db import migrations

from backend.providers.pricing import seed_prices


def seed(apps, schema_editor):
    seed_prices(apps.get_model("providers", "Price"))


class Migration(migrations.Migration):
    dependencies = [("providers", "0002_price")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
