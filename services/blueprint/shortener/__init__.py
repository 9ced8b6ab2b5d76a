"""The URL shortener and Pastebin of the guide's case studies (`blueprint serve shortener`).

service.py   the gRPC servicer: translates messages to the domain and back
checks.py    request fields -> validated values, or INVALID_ARGUMENT naming the fields
urls.py      URL validation and normalisation    aliases.py  custom alias rules
codes.py     generated codes: base62 Snowflake, or the guide's hash with a counter
links.py     shorten, resolve, delete, stats     pastes.py   create and get pastes
clicks.py    what Resolve publishes              worker.py   the consumer that counts it
store.py     the repository over the sharded databases (models.py, migrations/)
purge.py     removes expired links and pastes    app.py      opens and closes it all
records.py   the values store and domain share   errors.py   refusals and their statuses
"""
