from __future__ import annotations

import gc
import os
from importlib import import_module

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()

# What is loaded by now (Django, the apps, the URLconf with the admin and every view) lives as long as the process.
# Frozen, it is left out of the garbage collector's full passes, which otherwise walk all of it: such a pass took
# 65-90 ms in the middle of a review page, against 4 ms once frozen (bench/README.md, the fifth session's figures).
import_module(settings.ROOT_URLCONF)
gc.freeze()
