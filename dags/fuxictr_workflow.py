"""The FuXiCTR workflow Airflow DAG(s): `fuxictr_workflow` for the default training server,
plus `fuxictr_workflow__<server>` for each other configured server. See
plugins/fuxictr_workflow/dag_factory.py.
"""

from fuxictr_workflow.dag_factory import build_dags

for _dag in build_dags():
    globals()[_dag.dag_id] = _dag
