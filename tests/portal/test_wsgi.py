"""The WSGI entry point that gunicorn loads (portal/wsgi.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings


def test_the_wsgi_process_loads_every_view_and_leaves_it_out_of_the_collectors_full_passes():
    # Given a fresh process, as a gunicorn worker starts
    code = (
        "import gc, sys; import portal.wsgi; "
        "print(gc.get_freeze_count(), 'reviews.admin' in sys.modules, 'matching.views' in sys.modules, "
        "len(gc.get_objects(generation=2)))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"}

    # When it imports the application
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )

    # Then the admin and the views are loaded before the first request, and all of it is frozen: a full collection
    # walks none of it (the oldest generation holds only what was made after the freeze)
    frozen, admin_loaded, views_loaded, oldest = result.stdout.split()
    assert (admin_loaded, views_loaded) == ("True", "True"), result.stderr
    assert int(frozen) > 50_000
    assert int(oldest) < 1_000
