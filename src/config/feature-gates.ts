// Feature gate names upstream's --feature-gates accepts. kube-proxy registers the whole
// Kubernetes gate registry, so a shared configuration may name gates of other components;
// a name in none of them is a typo, and upstream refuses it ("unrecognized feature gate").
const PROXY_GATES = [
  'KubeProxyDrainingTerminatingNodes',
  'KubeProxyNFTablesLocalhostNodePorts',
  'NFTablesProxyMode',
  'ServiceTrafficDistribution',
  'TopologyAwareHints',
  'LoadBalancerIPMode',
  'MultiCIDRServiceAllocator',
  'WinDSR',
  'WinOverlay',
  'DisableNodeKubeProxyVersion',
  'PreferSameTrafficDistribution',
];

// Gates read by the libraries every component shares (logging, metrics, the API client).
const SHARED_GATES = [
  'AllAlpha',
  'AllBeta',
  'ContextualLogging',
  'LoggingAlphaOptions',
  'LoggingBetaOptions',
  'ComponentSLIs',
  'ComponentFlagz',
  'ComponentStatusz',
  'WatchListClient',
  'InformerResourceVersion',
  'InOrderInformers',
  'ClientsAllowCBOR',
  'ClientsPreferCBOR',
];

// The rest of the Kubernetes registry (kubelet, scheduler, controllers, API server).
const OTHER_GATES = [
  'AllowDNSOnlyNodeCSR', 'AllowOverwriteTerminationGracePeriodSeconds', 'AnyVolumeDataSource', 'AppArmor', 'AppArmorFields',
  'AuthorizeNodeWithSelectors', 'ClusterTrustBundle', 'ClusterTrustBundleProjection', 'CustomCPUCFSQuotaPeriod', 'CPUManager',
  'CPUManagerPolicyAlphaOptions', 'CPUManagerPolicyBetaOptions', 'CPUManagerPolicyOptions', 'CoordinatedLeaderElection',
  'CSIMigrationPortworx', 'CSIVolumeHealth', 'ContainerCheckpoint', 'CronJobsScheduledAnnotation', 'CrossNamespaceVolumeDataSource',
  'DevicePluginCDIDevices', 'DisableAllocatorDualWrite', 'DisableCloudProviders', 'DisableKubeletCloudCredentialProviders',
  'AllowInsecureKubeletCertificateSigningRequests', 'KubeletRegistrationGetOnExistsOnly', 'DynamicResourceAllocation', 'EventedPLEG',
  'ExecProbeTimeout', 'GracefulNodeShutdown', 'GracefulNodeShutdownBasedOnPodPriority', 'HPAContainerMetrics', 'HPAScaleToZero',
  'HonorPVReclaimPolicy', 'InTreePluginPortworxUnregister', 'JobBackoffLimitPerIndex', 'JobManagedBy', 'JobPodFailurePolicy',
  'JobPodReplacementPolicy', 'JobSuccessPolicy', 'KubeletCgroupDriverFromCRI', 'KubeletFineGrainedAuthz', 'KubeletInUserNamespace',
  'KubeletPodResourcesDynamicResources', 'KubeletPodResourcesGet', 'KubeletSeparateDiskGC', 'KubeletTracing',
  'LocalStorageCapacityIsolationFSQuotaMonitoring', 'LogarithmicScaleDown', 'MatchLabelKeysInPodAffinity',
  'MatchLabelKeysInPodTopologySpread', 'MaxUnavailableStatefulSet', 'MemoryManager', 'MemoryQoS', 'NodeLogQuery', 'NodeSwap',
  'PDBUnhealthyPodEvictionPolicy', 'PersistentVolumeLastPhaseTransitionTime', 'PodAndContainerStatsFromCRI', 'PodDeletionCost',
  'PodDisruptionConditions', 'PodIndexLabel', 'PodReadyToStartContainersCondition', 'PodHostIPs', 'PodLifecycleSleepAction',
  'PodSchedulingReadiness', 'PortForwardWebsockets', 'ProcMountType', 'QOSReserved', 'RecoverVolumeExpansionFailure',
  'RecursiveReadOnlyMounts', 'RelaxedDNSSearchValidation', 'RelaxedEnvironmentVariableValidation', 'ReloadKubeletServerCertificateFile',
  'ResourceHealthStatus', 'RotateKubeletServerCertificate', 'RuntimeClassInImageCriApi', 'ElasticIndexedJob', 'SchedulerQueueingHints',
  'SeparateTaintEvictionController', 'ServiceAccountTokenJTI', 'ServiceAccountTokenNodeBinding',
  'ServiceAccountTokenNodeBindingValidation', 'ServiceAccountTokenPodNodeInfo', 'SidecarContainers', 'SizeMemoryBackedVolumes',
  'StatefulSetAutoDeletePVC', 'StatefulSetStartOrdinal', 'StorageNamespaceIndex', 'StorageVersionMigrator',
  'TopologyManagerPolicyAlphaOptions', 'TopologyManagerPolicyBetaOptions', 'TopologyManagerPolicyOptions',
  'TranslateStreamCloseWebsocketRequests', 'UnknownVersionInteroperabilityProxy', 'UserNamespacesSupport', 'VolumeAttributesClass',
  'VolumeCapacityPriority', 'WindowsHostNetwork', 'NodeInclusionPolicyInPodTopologySpread', 'SELinuxMountReadWriteOncePod',
  'InPlacePodVerticalScaling', 'ImageMaximumGCAge', 'UserNamespacesPodSecurityStandards', 'SELinuxMount', 'SupplementalGroupsPolicy',
  'ImageVolume', 'SELinuxChangePolicy',
];

export const KNOWN_FEATURE_GATES: ReadonlySet<string> = new Set([...PROXY_GATES, ...SHARED_GATES, ...OTHER_GATES]);
