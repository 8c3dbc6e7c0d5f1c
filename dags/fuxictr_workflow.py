"""The FuXiCTR workflow Airflow DAG(s): `fuxictr_workflow` for the default training server,
plus `fuxictr_workflow__<server>` for each other configured server, and
`fuxictr_workflow_maintenance` (the retention clean-up). See
plugins/fuxictr_workflow/orchestration/dag_factory.py and maintenance_dag.py.
"""

from fuxictr_workflow.domain.config import get_config
from fuxictr_workflow.orchestration.dag_factory import build_dags
from fuxictr_workflow.orchestration.maintenance_dag import build_maintenance_dag

for _dag in [*build_dags(), build_maintenance_dag(get_config())]:
    if _dag is not None:
        globals()[_dag.dag_id] = _dag
