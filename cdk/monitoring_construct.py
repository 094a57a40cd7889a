"""Alarms and a dashboard for the pipeline."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.config import AlarmSettings
from icegate.constants import DEAD_LETTER


class MonitoringConstruct(Construct):
    """What an operator watches.

    - ``ExecutionsFailed``: every file that did not load. By design that includes every dead-lettered
      file (DeadLetter -> Fail), so this alarm says "look at dlq/", not necessarily "the pipeline is down".
    - ``DeadLettered``: files routed to the dead-letter path, measured as the dead-letter function's
      ``Invocations`` (one per file; a retried invocation counts again). Chosen over a metric filter on
      the state machine's log because it needs no log parsing and works whatever the log level.
    - ``DeadLetterErrors``: the dead-letter function itself failed, so a file may be neither loaded nor
      in ``dlq/``. The one alarm that always needs a person.
    - ``ExecutionsTimedOut``: a run exceeded the state machine's timeout.
    - ``UndeliveredEvents``: EventBridge gave up starting executions; the events wait in the SQS queue.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        state_machine: sfn.StateMachine,
        functions: Mapping[str, lambda_.IFunction],
        undelivered_events: sqs.IQueue,
        settings: AlarmSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        period = Duration.minutes(settings.period_minutes)
        dead_letter = functions[DEAD_LETTER]

        executions_failed = state_machine.metric_failed(period=period, statistic=cw.Stats.SUM)
        # A label would turn the alarm into a metric-math alarm; the dashboard labels its own copy.
        dead_lettered = dead_letter.metric_invocations(period=period, statistic=cw.Stats.SUM)
        undelivered = undelivered_events.metric_approximate_number_of_messages_visible(
            period=period, statistic=cw.Stats.MAXIMUM
        )
        self.alarms = [
            self._alarm(
                "ExecutionsFailed",
                executions_failed,
                settings.failed_executions_threshold,
                "icegate: executions failed (each dead-lettered file fails its execution; see dlq/*/error.json)",
            ),
            self._alarm(
                "DeadLettered",
                dead_lettered,
                settings.dead_letter_threshold,
                "icegate: files were routed to the dead-letter prefix (dlq/) of the lake bucket",
            ),
            self._alarm(
                "DeadLetterErrors",
                dead_letter.metric_errors(period=period, statistic=cw.Stats.SUM),
                1,
                "icegate: the dead-letter function failed: a file may be neither loaded nor in dlq/",
            ),
            self._alarm(
                "ExecutionsTimedOut",
                state_machine.metric_timed_out(period=period, statistic=cw.Stats.SUM),
                1,
                "icegate: executions exceeded the state machine timeout",
            ),
            self._alarm(
                "UndeliveredEvents",
                undelivered,
                1,
                "icegate: EventBridge could not start executions; the S3 events wait in the SQS dead-letter queue",
            ),
        ]
        self.dashboard = self._build_dashboard(state_machine, functions, dead_lettered, undelivered, period)

    def _alarm(self, name: str, metric: cw.IMetric, threshold: int, description: str) -> cw.Alarm:
        alarm = cw.Alarm(
            self,
            name,
            metric=metric,
            threshold=threshold,
            evaluation_periods=self._settings.evaluation_periods,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            # No executions, no files: that is quiet, not broken.
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        if self._settings.topic_arn:
            topic = sns.Topic.from_topic_arn(self, f"{name}Topic", self._settings.topic_arn)
            alarm.add_alarm_action(cw_actions.SnsAction(topic))
            alarm.add_ok_action(cw_actions.SnsAction(topic))
        return alarm

    def _build_dashboard(
        self,
        state_machine: sfn.StateMachine,
        functions: Mapping[str, lambda_.IFunction],
        dead_lettered: cw.Metric,
        undelivered: cw.Metric,
        period: Duration,
    ) -> cw.Dashboard:
        dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"{Stack.of(self).stack_name}-icegate")
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Executions",
                width=12,
                left=[
                    state_machine.metric_started(label="Started", period=period, statistic=cw.Stats.SUM),
                    state_machine.metric_succeeded(label="Succeeded", period=period, statistic=cw.Stats.SUM),
                    state_machine.metric_failed(label="Failed", period=period, statistic=cw.Stats.SUM),
                    state_machine.metric_timed_out(label="Timed out", period=period, statistic=cw.Stats.SUM),
                ],
            ),
            cw.GraphWidget(
                title="Dead-lettered files and undelivered events",
                width=12,
                left=[dead_lettered.with_(label="Dead-lettered files")],
                right=[undelivered.with_(label="Undelivered S3 events")],
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Errors per stage",
                width=8,
                left=[
                    fn.metric_errors(label=stage, period=period, statistic=cw.Stats.SUM)
                    for stage, fn in functions.items()
                ],
            ),
            cw.GraphWidget(
                title="Duration per stage (p95)",
                width=8,
                left=[
                    fn.metric_duration(label=stage, period=period, statistic=cw.Stats.p(95))
                    for stage, fn in functions.items()
                ],
            ),
            cw.GraphWidget(
                title="Throttles per stage",
                width=8,
                left=[
                    fn.metric_throttles(label=stage, period=period, statistic=cw.Stats.SUM)
                    for stage, fn in functions.items()
                ],
            ),
        )
        dashboard.add_widgets(cw.AlarmStatusWidget(title="Alarms", width=24, alarms=self.alarms))
        return dashboard
