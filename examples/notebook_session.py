"""A notebook session against lensweb: submit, stream, look at the rows, open the page, export.

    pip install './clients/python[pandas]'
    LENSWEB=http://127.0.0.1:8000 LENSWEB_KEY=lw_… python examples/notebook_session.py

Each block below is one notebook cell.
"""

import os

from lensweb_client import Client, InvalidRequest

client = Client(os.environ.get("LENSWEB", "http://127.0.0.1:8000"), os.environ["LENSWEB_KEY"])
print([lens.id for lens in client.lenses()])

# Submit, and watch the rows arrive (a tqdm bar over positions; Server-Sent Events underneath).
job = client.analyze("The Eiffel Tower is in Paris.", best_of_k=4, kl=True)
job.wait(progress=True)
print(job.html_url)  # the results page, to look and share

# The rows as a DataFrame: one line per position.
frame = job.to_pandas()
print(frame[["position", "token", "explanation", "mse", "relative_rmse"]].sort_values("mse").head())

# Many texts in one request; a refused item comes back in its place, the others are queued.
jobs = client.analyze_many([{"text": "Water boils at 100 degrees."}, {"text": ""}])
for item in jobs:
    print(item if isinstance(item, InvalidRequest) else item.wait().status)

# Last week's finished analyses that mention Paris, and one of them in the research file format.
for past in client.list(status="done", q="Paris", limit=5):
    print(past.id, past.progress, past.html_url)
with open(f"analysis-{job.id}.json", "wb") as out:
    out.write(client.export(job, "json"))

# Talk to the model, then analyse its reply.
reply = client.generate(
    messages=[{"role": "user", "content": "Name a city in France."}], chat_reply=True, then_analyse=True
).wait()
print(reply.samples[0], reply.analysis().wait().html_url)
