"""leadwatch's Chalice app: wiring only. The handlers live in functions/."""

from chalice import Chalice

from functions.api import bp as api
from functions.schedules import bp as schedules
from functions.webhooks import bp as webhooks
from functions.worker import bp as worker

app = Chalice(app_name="leadwatch")
app.register_blueprint(webhooks)
app.register_blueprint(api)
app.register_blueprint(worker)
app.register_blueprint(schedules)
